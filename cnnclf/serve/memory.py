"""Handing memory freed by large request bodies back to the system (glibc; elsewhere a no-op).

Why: glibc serves an allocation over its mmap threshold (128 KB at first) with its own
mapping, returned on free; but freeing one raises the threshold to that size, so the next
20 MB bodies come from the heap and arenas, which keep freed pages. A server that took 48
uploads of 20 MB grew by a gigabyte and never shrank. Fixing the threshold keeps large bodies
in their own mappings, and a trim after a burst returns what the arenas still hold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
LARGE_ALLOCATION = 1 << 20  # bytes; a body chunk (64 KB) stays below, a body goes above


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # not glibc (musl, macOS): nothing to tune
    return libc


def keep_large_allocations_apart(threshold: int = LARGE_ALLOCATION) -> bool:
    """Fixes glibc's mmap threshold, process-wide; True where that was done."""
    libc = _libc()
    return bool(libc and libc.mallopt(_M_MMAP_THRESHOLD, threshold))


def return_freed_memory() -> None:
    """`malloc_trim(0)`: freed pages in every arena back to the system (milliseconds)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
