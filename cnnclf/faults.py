"""Named fault points: CNNCLF_FAULT="point[@n]=action" makes the process fail on purpose the
n-th time (default the 1st) it reaches `point`, so tests can kill, interrupt or fill the disk
at exactly that instant. action is kill (SIGKILL), interrupt (SIGINT, as Ctrl-C) or enospc (a
full disk).

One function for every room that has fault points, each listing its own beside its code: the
run directory (training/rundir.py), the bundle upload (storage/bundles.py) and review --apply.
"""

from __future__ import annotations

import errno
import os
import signal
import time

FAULT_ENV = "CNNCLF_FAULT"
_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Acts out the fault CNNCLF_FAULT asks for at this point; does nothing otherwise."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    where, _, action = spec.partition("=")
    point, _, nth = where.partition("@")
    if point != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] != int(nth or 1):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # let the main thread take it here, as a real Ctrl-C would
    elif action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {name})")
    else:
        raise ValueError(f"{FAULT_ENV}: unknown action {action!r}")
