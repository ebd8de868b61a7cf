"""The file-system steps the run directory (`rundir.py`) is built from.

Each is either atomic (a kill leaves the state before or the one after) or durable (it survives
a power loss), and says which: a lock that names its holder, a write that appears complete by
one rename, an fsync of a file or of a folder's renames, and an atomic swap of two folders.
Nothing here knows about runs or bundles.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import secrets
from pathlib import Path

NO_EXCHANGE_ENV = "CNNCLF_NO_EXCHANGE"  # publish as on a file system without renameat2


class LockHeld(Exception):
    """Another process holds the lock; `holder` is the pid it wrote, or ''."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def take_lock(path: Path) -> int:
    """Takes an exclusive flock on `path` without waiting; returns the fd that holds it.

    Raises:
        LockHeld: another process holds it.
        OSError: the lock file cannot be created.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise LockHeld(holder) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a lock file that its last holder unlinked while we waited
            try:  # the pid is only for messages: a full disk must not keep the lock
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass
            return fd
        os.close(fd)


def release_lock(path: Path, fd: int) -> None:
    """Unlinks the lock file, then lets go of the lock (so a waiter never takes a stale file)."""
    with contextlib.suppress(OSError):
        os.unlink(path)
    os.close(fd)


def write_atomically(path: Path, write, before_rename=None) -> None:
    """Writes `path` through `write(file)` under a temporary name, fsyncs it, then renames it.

    `before_rename()`, when given, runs between the two (a fault point).
    """
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically_unique(path: Path, write) -> None:
    """`write_atomically` under a temporary name of this write's own, for a file that several
    processes may write at once (serve --review's decisions.csv): no writer truncates, renames
    or removes another's temporary file, and whichever rename comes last wins whole. A kill
    can leave a `.NAME.<pid>-<random>.tmp` behind; `path` is never partial.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json_atomically(path: Path, data, before_rename=None) -> None:
    text = json.dumps(data).encode("utf-8")
    write_atomically(path, lambda f: f.write(text), before_rename)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Makes renames in `path` durable (power loss), not just atomic (kill)."""
    # Some file systems cannot fsync a directory; renames stay atomic there.
    with contextlib.suppress(OSError):
        fsync_file(path)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths (Linux renameat2); False where the system cannot."""
    if os.environ.get(NO_EXCHANGE_ENV):
        return False  # tests take the two-rename path that other systems get
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), ctypes.c_uint(_RENAME_EXCHANGE)
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(b))
