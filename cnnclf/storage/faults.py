"""The upload's named fault points (`cnnclf.faults`: CNNCLF_FAULT="point[@n]=kill")."""

from __future__ import annotations

from cnnclf.faults import FAULT_ENV, fault_point

__all__ = ["FAULT_ENV", "FAULT_POINTS", "fault_point"]
FAULT_POINTS = (
    "upload.marker_removed",  # the old _COMPLETE is gone; no file uploaded yet
    "upload.file_written",  # one more file of the bundle uploaded (use @n for the n-th)
    "upload.files_written",  # every file uploaded, the marker not yet written
)
