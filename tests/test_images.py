"""The shared decoder: every odd-but-readable image becomes the same kind of array."""

import io

import numpy as np
import pytest
from crafted_images import eps
from PIL import Image

from cnnclf.data.decode import (
    ImageSpec,
    decode_image_bytes,
    is_large_upload,
    load_image,
    open_image,
    read_info,
)
from cnnclf.errors import ImageError

RGB = ImageSpec((8, 8), "rgb")
GRAY = ImageSpec((8, 8), "grayscale")


def test_resizes_and_keeps_channels(tmp_path):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    array = load_image(str(path), ImageSpec((12, 20), "rgb"))
    assert array.shape == (12, 20, 3) and array.dtype == np.uint8
    assert array[..., 0].mean() > 150 and array[..., 1].mean() < 60
    assert load_image(str(path), ImageSpec((12, 20), "grayscale")).shape == (12, 20, 1)


def test_transparency_is_composited_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert load_image(str(path), RGB).min() == 255


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (16, 8), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 8, 8))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    array = load_image(str(path), ImageSpec((16, 8), "grayscale"))[..., 0]
    assert array.shape == (16, 8)  # now portrait
    assert array[:6].mean() > 200 and array[-6:].mean() < 50  # white half on top


def test_sixteen_bit_uses_the_full_range(tmp_path):
    path = tmp_path / "scan.png"
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(path)
    value = load_image(str(path), GRAY)[0, 0, 0]
    assert 120 <= value <= 135  # mid-grey, not clipped to white


def test_cmyk_and_palette_images_decode(tmp_path):
    cmyk = tmp_path / "scan.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cmyk)  # red
    assert load_image(str(cmyk), RGB)[..., 0].mean() > 200
    gif = tmp_path / "p.gif"
    Image.new("RGB", (8, 8), (0, 0, 255)).convert("P").save(gif)
    assert load_image(str(gif), RGB)[..., 2].mean() > 200


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"not an image at all", "not an image"),
        (None, "cannot be decoded"),
    ],
)
def test_broken_files_raise_image_error_with_path(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is None:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, "JPEG")
        content = buffer.getvalue()[:200]  # truncated download
    path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_image(str(path), RGB)
    assert info.value.path == str(path) and reason in info.value.reason


# ------------------------------------------------------------------------------------------
# Formats: the documented six, and nothing else reaches a Pillow plugin.


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP"])
def test_every_documented_format_decodes(tmp_path, fmt):
    path = tmp_path / f"image.{fmt.lower()}"
    Image.new("RGB", (20, 12), (0, 0, 230)).save(path, fmt)
    assert load_image(str(path), RGB)[..., 2].mean() > 180
    assert read_info(str(path)).format == fmt


@pytest.fixture
def eps_opened(monkeypatch):
    """The images Pillow's EPS plugin was asked to open (it runs Ghostscript on load)."""
    from PIL import EpsImagePlugin

    opened = []

    def record(self):
        opened.append(self)
        raise SyntaxError("the EPS plugin must not be reached")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", record)
    return opened


def test_an_eps_named_png_never_reaches_the_eps_plugin(tmp_path, eps_opened):
    path = tmp_path / "logo.png"
    path.write_bytes(eps())
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(path)  # unrestricted, Pillow does ask the EPS plugin: the check can fail
    assert len(eps_opened) == 1
    calls = [
        lambda: load_image(str(path), RGB),
        lambda: read_info(str(path)),
        lambda: decode_image_bytes(eps(), RGB, "logo.png"),
        lambda: is_large_upload(eps(), RGB, "logo.png"),
    ]
    for call in calls:
        with pytest.raises(ImageError) as info:
            call()
        assert info.value.reason == (
            "not an image cnnclf reads (JPEG, PNG, BMP, GIF, TIFF or WebP): "
            "another format, or corrupt"
        )
    with pytest.raises(Image.UnidentifiedImageError):
        open_image(path)
    assert len(eps_opened) == 1


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX"])
def test_formats_pillow_reads_but_cnnclf_does_not_are_unreadable(tmp_path, fmt):
    path = tmp_path / "image.png"
    Image.new("RGB", (16, 16), (9, 9, 9)).save(path, fmt)
    assert Image.open(path).format == fmt
    with pytest.raises(ImageError, match="not an image cnnclf reads"):
        load_image(str(path), RGB)
