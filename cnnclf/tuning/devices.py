"""One trial per GPU: each worker on a machine with several GPUs takes one of its own.

A worker that finds CUDA_VISIBLE_DEVICES unset and two or more GPUs claims the first GPU no
other worker holds (a lock file per GPU under <out>/gpus/, held until the worker exits, so a
killed worker frees its GPU) and sets CUDA_VISIBLE_DEVICES to it before TensorFlow loads.
Start as many workers as there are GPUs; each trains on one. A worker with
CUDA_VISIBLE_DEVICES already set (a scheduler's choice) keeps it.
"""

from __future__ import annotations

import os
from pathlib import Path

from cnnclf.errors import CnnclfError


def gpu_count() -> int:
    """NVIDIA GPUs on this machine, read from the driver without loading TensorFlow."""
    folder = Path("/proc/driver/nvidia/gpus")
    try:
        return sum(1 for _ in folder.iterdir())
    except OSError:
        return 0


def claim_gpu(locks_dir: Path, count: int) -> tuple[int | None, object | None]:
    """The first of `count` GPUs whose lock in `locks_dir` is free, and the open lock (keep it
    open while training: closing it frees the GPU).

    Returns (None, None) when no GPU needs choosing (fewer than 2). Raises CnnclfError when every
    GPU already has a worker.
    """
    import fcntl

    if count < 2:
        return None, None
    locks_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        handle = open(locks_dir / f"{index}.lock", "a")  # noqa: SIM115 - held until exit
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return index, handle
    raise CnnclfError(
        f"every GPU on this machine ({count}) already has a cnnclf tune worker; start at most "
        f"{count} workers here, or set CUDA_VISIBLE_DEVICES yourself"
    )


def assign_gpu(out_dir: Path, device: str) -> object | None:
    """Sets CUDA_VISIBLE_DEVICES for this worker (see the module docstring); returns the lock
    to keep open, or None."""
    if device == "cpu" or os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    index, handle = claim_gpu(out_dir / "gpus", gpu_count())
    if index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    return handle
