"""A PNG's pixel data holds all of its rows (cnnclf/data/png_data.py), or the file is refused."""

import io

import numpy as np
import pytest
from crafted_images import gray_rows, png, png_chunk, short_png
from PIL import Image

from cnnclf.data.decode import ImageSpec, decode_image_bytes
from cnnclf.data.png_data import missing_data
from cnnclf.errors import ImageError


def saved_png(mode: str, size=(37, 23)) -> bytes:
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (size[1], size[0]), np.uint16))
    else:
        pixels = rng.integers(0, 255, (size[1], size[0], 4), np.uint8)
        image = Image.fromarray(pixels, "RGBA").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_whole_pngs_miss_nothing(mode):
    # Every bit depth Pillow writes (1, 8 and 16 bits a sample) and every color type.
    assert missing_data(io.BytesIO(saved_png(mode))) is None


def test_whole_interlaced_pngs_miss_nothing():
    # Pillow writes no interlaced PNG: gray rows deflated in Adam7's order, at a size that
    # leaves some passes narrow.
    width, height = 37, 23
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4)]
    passes += [(1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b"".join(
        gray_rows(len(range(column, width, column_step)), len(range(row, height, row_step)))
        for column, row, column_step, row_step in passes
    )
    data = png(width, height, raw, interlace=1)
    assert missing_data(io.BytesIO(data)) is None
    assert missing_data(io.BytesIO(png(width, height, raw[:-20], interlace=1))) is not None
    pixels = decode_image_bytes(data, ImageSpec((height, width), "grayscale"))
    assert (pixels == 200).all()  # and the decoder reads it whole


def test_a_stream_that_ends_early_is_found_and_refused():
    data = short_png(32, 32, rows=8)
    Image.open(io.BytesIO(data)).load()  # what Pillow does: no error, 24 black rows
    reason = missing_data(io.BytesIO(data))
    assert reason is not None and "ends early (264 of 1,056 bytes" in reason
    with pytest.raises(ImageError) as info:
        decode_image_bytes(data, ImageSpec((8, 8)), "crafted.png")
    assert info.value.path == "crafted.png"
    assert "pixel data ends early" in info.value.reason and "\n" not in info.value.reason


def test_a_stream_over_several_idat_chunks_is_counted_whole():
    noise = np.random.default_rng(1).integers(0, 255, (16, 16), np.uint8)
    whole = png(16, 16, b"".join(b"\x00" + row.tobytes() for row in noise))
    stream = whole[whole.index(b"IDAT") + 4 : whole.index(b"IEND") - 8]
    pieces = [png_chunk(b"IDAT", stream[i : i + 50]) for i in range(0, len(stream), 50)]
    head = whole[: whole.index(b"IDAT") - 4]
    end = png_chunk(b"IEND", b"")
    assert missing_data(io.BytesIO(head + b"".join(pieces) + end)) is None
    assert missing_data(io.BytesIO(head + b"".join(pieces[:-2]) + end)) is not None


def test_the_file_position_is_kept_and_corrupt_streams_are_left_to_pillow():
    data = saved_png("RGB")
    file = io.BytesIO(data)
    file.seek(33)
    missing_data(file)
    assert file.tell() == 33
    idat = data.index(b"IDAT") + 4
    corrupt = data[: idat + 2] + b"\xff" * 8 + data[idat + 10 :]
    assert missing_data(io.BytesIO(corrupt)) is None
    with pytest.raises(ImageError, match="cannot be decoded"):
        decode_image_bytes(corrupt, ImageSpec((8, 8)))
