"""Listing image files on disk: which names are images, which entries are regular files, and
the one walk every command shares (links, special files and unreadable folders said once).

Plain Python: check-data, predict and the decoder use it without TensorFlow.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# What Keras reads (bmp, gif, jpeg, jpg, png) plus the formats Pillow decodes just as well.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def is_image_name(name: str) -> bool:
    # Dot-files include macOS AppleDouble `._x.jpg` companions, which are not images.
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


# Reasons `list_images` records for what it skipped; check-data sorts them by these openings.
ALREADY_LISTED = "folder already listed as"
SAME_FILE = "same file as"


def file_kind(mode: int) -> str:
    """'a FIFO', 'a character device', ...: what an `st_mode` that is no regular file is."""
    for test, kind in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a plain file"


def not_regular_reason(path: str, status: os.stat_result) -> str | None:
    """Why `path` (whose `os.stat` is `status`) cannot be an image file; None if it is regular."""
    if stat.S_ISREG(status.st_mode):
        return None
    link = "a symbolic link to " if os.path.islink(path) else ""
    return f"not a regular file ({link}{file_kind(status.st_mode)})"


def list_images(folder: str | Path, skipped: dict[str, str] | None = None) -> list[str]:
    """Image files under `folder`, recursively, sorted; dot-files and dot-folders are skipped.

    Only regular files are listed: FIFOs, sockets, devices, dangling links, unlistable folders
    and links back to a folder already listed are left out, and recorded in `skipped` (path ->
    reason) when given. A file reached twice through links is listed once.
    """
    return [path for path, _ in _walk(folder, skipped, images_only=True)]


def list_files(
    folder: str | Path, skipped: dict[str, str] | None = None
) -> list[tuple[str, tuple[int, int]]]:
    """Like `list_images`, but every regular file whatever its name, each with its
    (st_dev, st_ino): the identity of the real file, whichever link reached it."""
    return _walk(folder, skipped, images_only=False)


def _walk(folder, skipped, images_only: bool) -> list[tuple[str, tuple[int, int]]]:
    skipped = {} if skipped is None else skipped
    root = os.fspath(folder)
    try:
        top = os.stat(root)
    except OSError as exc:
        skipped[root] = _stat_failure(root, exc)
        return []
    # Folders by (st_dev, st_ino), so a link loop (a/loop -> ..) is followed once, not forever.
    visited = {(top.st_dev, top.st_ino): root}
    found = []
    stack = [(root, top.st_dev)]
    while stack:
        current, device = stack.pop()
        for entry in _entries(current, skipped):
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_file(follow_symlinks=False):
                    # The common case, from the directory listing alone (no stat per file).
                    if not images_only or is_image_name(entry.name):
                        found.append((entry.path, (device, entry.inode())))
                    continue
                status = entry.stat()  # a folder or link: follow it, see what it really is
            except OSError as exc:
                skipped[entry.path] = _stat_failure(entry.path, exc)
                continue
            if stat.S_ISDIR(status.st_mode):
                key = (status.st_dev, status.st_ino)
                if key in visited:
                    skipped[entry.path] = _listed_once(entry, visited[key])
                    continue
                visited[key] = entry.path
                stack.append((entry.path, status.st_dev))
            elif images_only and not is_image_name(entry.name):
                continue
            elif not stat.S_ISREG(status.st_mode):
                skipped[entry.path] = not_regular_reason(entry.path, status)
            else:
                found.append((entry.path, (status.st_dev, status.st_ino)))
    return _once_per_file(sorted(found), skipped)


def _entries(folder: str, skipped: dict[str, str]) -> list[os.DirEntry]:
    """`folder`'s entries in a stable order; none (and the reason in `skipped`) when it
    cannot be listed."""
    try:
        with os.scandir(folder) as listing:
            # Real folders before links to them, and by name: the same tree always lists
            # the same paths, and a folder reached both ways is listed under its own name.
            return sorted(listing, key=lambda e: (_is_link(e), e.name))
    except PermissionError:
        skipped[folder] = "permission denied: this folder cannot be listed (chmod a+rx it)"
    except OSError as exc:
        skipped[folder] = f"this folder cannot be listed ({exc.strerror or exc})"
    return []


def _listed_once(entry: os.DirEntry, first: str) -> str:
    """Why a folder reached again (through `entry`) is not listed a second time."""
    if entry.path.startswith(first + os.sep):
        how = "a link loop"
    elif _is_link(entry):
        how = "a link"
    else:
        how = "reached through a link"
    return f"{ALREADY_LISTED} {first} ({how}): listed once"


def _once_per_file(found, skipped: dict[str, str]) -> list[tuple[str, tuple[int, int]]]:
    """`found` (sorted) with each real file once, under its first path; the others skipped."""
    first_path: dict[tuple[int, int], str] = {}
    unique = []
    for path, key in found:
        if key in first_path:
            skipped[path] = f"{SAME_FILE} {first_path[key]} (a link): kept once"
        else:
            first_path[key] = path
            unique.append((path, key))
    return unique


def _is_link(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _stat_failure(path: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        return f"dangling symbolic link (to {os.readlink(path)}, which does not exist)"
    if isinstance(exc, PermissionError):
        return "permission denied (chmod a+rx the folders above it)"
    return f"cannot be read ({exc.strerror or exc})"
