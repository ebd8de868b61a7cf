"""Hostile image files made by code, in bytes: what an attacker uploads or drops in a folder.

Each is a few dozen bytes to a few kilobytes, built from its format's definition (PNG chunks
with zlib and struct, PostScript as text), so a test shows exactly what the file holds.
"""

from __future__ import annotations

import struct
import zlib

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png(width: int, height: int, raw: bytes, color: int = 0, interlace: int = 0) -> bytes:
    """An 8-bit PNG whose IDAT is `raw` (filtered rows, each with its filter byte), deflated
    into one complete zlib stream, however many rows `raw` holds."""
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, interlace)
    return (
        _PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def gray_rows(width: int, rows: int, value: int = 200) -> bytes:
    """`rows` unfiltered rows of a gray (color type 0) image, every pixel `value`."""
    return (b"\x00" + bytes([value]) * width) * rows


def height_bomb() -> bytes:
    """The issue's 69-byte PNG: 1x80,000,000 pixels (under Pillow's pixel limit), whose
    complete zlib stream holds two rows; Pillow decoded the rest as black, 720 MB of it."""
    return png(1, 80_000_000, gray_rows(1, 2, 127))


def short_png(width: int = 32, height: int = 32, rows: int = 8) -> bytes:
    """A `width` x `height` gray PNG whose clean zlib stream ends after `rows` rows."""
    return png(width, height, gray_rows(width, rows))


def eps() -> bytes:
    """A tiny Encapsulated PostScript file: Pillow hands these to Ghostscript (`gs`)."""
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n"
        b"%%BoundingBox: 0 0 16 16\n"
        b"newpath 0 0 moveto 16 16 lineto stroke\n"
        b"showpage\n"
        b"%%EOF\n"
    )
