"""Whether a PNG's compressed pixel data holds all of its rows.

Why this exists: Pillow's PNG decoder stops without an error when the zlib stream ends cleanly
at a row boundary, and leaves every row after it black (the check is commented out in its
`ZipDecode.c`). A 69-byte file that says it is 1×80,000,000 pixels then decodes to 80 MB of
black, and a crafted photo to a picture with its lower part missing. The stream is inflated
once more here, in 1 MB pieces that are counted and dropped, and compared with the size the
header promises; this costs about 40% of a PNG decode's time and no memory to speak of.

Example:
    with open("x.png", "rb") as file:
        reason = missing_data(file)  # None, or "its pixel data ends after 2 of 80000000 rows"
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG color type -> samples per pixel
# Adam7 passes: (first column, first row, column step, row step).
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_PIECE = 2**20  # inflated bytes held at once


def missing_data(file: BinaryIO) -> str | None:
    """Why `file` (a PNG, read from its start) decodes incomplete, or None if all rows are there.

    Only the first run of IDAT chunks is read, as Pillow reads it; the file position is restored.
    Damage Pillow itself reports (a bad header, a corrupt stream) is left for it to say.
    """
    position = file.tell()
    try:
        file.seek(0)
        header = _header(file)
        if header is None:
            return None
        width, height, bits, color, interlace = header
        rows = _raw_rows(width, height, bits * _CHANNELS.get(color, 4), interlace)
        expected = sum(count * length for count, length in rows)
        inflated = _inflated_size(file, expected)
        if inflated is None or inflated >= expected:
            return None
        return (
            f"its pixel data ends early ({inflated:,} of {expected:,} bytes, so rows would be "
            "left black): a truncated or crafted file; re-export or delete it"
        )
    finally:
        file.seek(position)


def _header(file: BinaryIO) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, color type, interlace) from IHDR, or None if it is not there."""
    start = file.read(8 + 8 + 13)
    if len(start) < 29 or start[:8] != _SIGNATURE or start[12:16] != b"IHDR":
        return None
    width, height, bits, color, _, _, interlace = struct.unpack(">IIBBBBB", start[16:29])
    file.read(4)  # IHDR's CRC
    return width, height, bits, color, interlace


def _raw_rows(width: int, height: int, pixel_bits: int, interlace: int) -> list[tuple[int, int]]:
    """(rows, bytes per row with its filter byte) of each pass the stream holds."""
    if interlace != 1:
        return [(height, 1 + (width * pixel_bits + 7) // 8)]
    passes = []
    for column, row, column_step, row_step in _ADAM7:
        columns = (width - column + column_step - 1) // column_step
        count = (height - row + row_step - 1) // row_step
        if columns > 0 and count > 0:
            passes.append((count, 1 + (columns * pixel_bits + 7) // 8))
    return passes


def _inflated_size(file: BinaryIO, enough: int) -> int | None:
    """Bytes the first IDAT run inflates to, counted up to `enough`; None if it is corrupt."""
    inflater = zlib.decompressobj()
    total = 0
    seen_idat = False
    while total < enough and not inflater.eof:
        head = file.read(8)
        if len(head) < 8:
            break
        length, kind = struct.unpack(">I4s", head)
        if kind != b"IDAT":
            if seen_idat:
                break
            file.seek(length + 4, 1)  # chunk data and CRC
            continue
        seen_idat = True
        remaining = length
        while remaining and total < enough and not inflater.eof:
            data = file.read(min(remaining, _PIECE))
            if not data:
                return total
            remaining -= len(data)
            try:
                while data and total < enough:
                    total += len(inflater.decompress(data, _PIECE))
                    data = inflater.unconsumed_tail
            except zlib.error:
                return None
        file.seek(remaining + 4, 1)
    return total
