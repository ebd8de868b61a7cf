"""Named fault points for the upload, driven by the same CNNCLF_FAULT variable as the run
directory's (training/rundir.py): "point[@n]=kill" kills the process the n-th time it passes.

Repeated here rather than imported: storage sits below training in the rooms' order.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "CNNCLF_FAULT"
FAULT_POINTS = (
    "upload.marker_removed",  # the old _COMPLETE is gone; no file uploaded yet
    "upload.file_written",  # one more file of the bundle uploaded (use @n for the n-th)
    "upload.files_written",  # every file uploaded, the marker not yet written
)
_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    where, _, action = spec.partition("=")
    point, _, nth = where.partition("@")
    if point != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(nth or 1) and action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
