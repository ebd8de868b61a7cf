"""Opening a file the user named only if it is a regular file, and reading it with a byte cap.

A config or a bundle sidecar that is a FIFO blocks `open()` until a writer appears (forever, in
practice), and a device such as /dev/zero never ends; a sidecar of hundreds of MB costs GBs to
parse. Both readers go through here so that a file is refused by its type and size before any
parser sees it. (Images have their own check in `data.decode`, which reports per-image.)

Example:
    data = read_regular_file(path, max_bytes=1_000_000)  # bytes, or NotRegularFile/FileTooLarge
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO


class NotRegularFile(OSError):
    """`path` is a FIFO, a device, a folder or a socket: nothing a config or sidecar can be."""


class FileTooLarge(OSError):
    """More bytes than the reader's cap; the message says the cap."""


def open_regular_file(path: str | os.PathLike[str]) -> BinaryIO:
    """`path` opened for binary reading, refused unless it is a regular file.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; the type
    is then checked on the open descriptor, so a FIFO swapped in after a `stat` cannot block.

    Raises:
        NotRegularFile: not a regular file (the message names its kind).
        OSError: it cannot be opened (missing, permission denied).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(f"not a regular file ({_kind(mode)}); give a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The whole of a regular file of at most `max_bytes` bytes; one byte past it is read, no more.

    Raises:
        NotRegularFile, FileTooLarge, or OSError as `open_regular_file`.
    """
    with open_regular_file(path) as stream:
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(f"larger than {describe_size(max_bytes)}, the most it may hold")
    return data


def describe_size(n_bytes: float) -> str:
    """`n_bytes` in the largest unit that keeps it at 1 or more: "1.5 GB", "64 KB", "900 bytes"."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{int(n_bytes)} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"
