"""The one image decoder that training, validation and prediction all use.

If training and prediction decoded images differently (another resize filter, EXIF rotation
applied in one and not the other), a model would silently see different pixels at prediction
time. So there is exactly one function, `load_image`, and an `ImageSpec` that the bundle stores.

Pillow rather than `tf.io.decode_image`: it applies EXIF orientation, converts CMYK, palette,
RGBA and 16-bit images, decodes JPEGs at reduced size when the target is much smaller (DCT
scaling via `draft`), reports which file is broken instead of failing a whole batch, and releases
the GIL while decoding and resizing, so a thread pool or a parallel `tf.data` map scales.
Rescaling to [0, 1] is *not* done here: it lives inside the model, so no caller can forget it.

Hostile files are refused before they can hurt: only regular files are opened (a FIFO named
`x.png` would block `open` forever, `/dev/zero` would be read without end); only the formats in
`IMAGE_FORMATS` are read, by `open_image` (Pillow would otherwise try all of its plugins, and an
EPS named `x.png` went to Ghostscript); a side over `MAX_SIDE` pixels, a PNG whose pixel data
ends early (Pillow would leave its last rows black) and an image whose decode would need more
memory than one image may use are refused as unreadable; and the memory being decoded at once
across all threads is capped (`decode_budget.DECODE_BUDGET`), because a PNG of a few hundred
kilobytes can decode to a thousand times that.

Example:
    spec = ImageSpec(image_size=(64, 64), color_mode="rgb")
    array = load_image("cat.jpg", spec)  # uint8, shape (64, 64, 3)
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from cnnclf.data import png_data
from cnnclf.data.decode_budget import (
    DECODE_BUDGET,
    MAX_SIDE,
    MIB,
    image_bytes,
    load_cost,
    resize_cost,
)
from cnnclf.data.listing import file_kind, not_regular_reason
from cnnclf.errors import ImageError

# The formats cnnclf reads, by Pillow's names (JPEG includes MPO, the multi-picture JPEG some
# cameras write). Everything is opened with only these plugins: see `open_image`.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")
_FORMAT_NAMES = "JPEG, PNG, BMP, GIF, TIFF or WebP"

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# EXIF orientation -> the transposition that makes the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = (5, 6, 7, 8)
# Up to this many decoded pixels, an image takes the original path (orient, convert, resize at
# full size), so the pixels of every ordinary image are exactly what earlier versions fed the
# model. Above it, full-size copies cost hundreds of MB each: resize first, then composite and
# orient the small result (equal up to rounding; Pillow resizes RGBA premultiplied).
_FULL_SIZE_PATH_PIXELS = 4 * 2**20


def open_regular(path: str):
    """Opens `path` for binary reading only if it is a regular file; raises `ImageError` else.

    Opening a FIFO blocks until a writer appears and a device never ends, so the file type is
    checked by `stat` *before* `open`, and again on the open descriptor (O_NONBLOCK keeps a FIFO
    swapped in between from blocking) so the check cannot be raced.
    """
    try:
        reason = not_regular_reason(path, os.stat(path))
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError(
                path, f"dangling symbolic link (to {os.readlink(path)}, which does not exist)"
            ) from None
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"cannot be read ({exc.strerror or exc})") from None
    if reason:
        raise ImageError(path, reason)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise ImageError(
            path, "permission denied: make it readable (chmod a+r) or remove it"
        ) from None
    except OSError as exc:
        raise ImageError(path, f"cannot be read ({exc.strerror or exc})") from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise ImageError(path, f"not a regular file ({file_kind(status.st_mode)})")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def open_image(file) -> Image.Image:
    """`Image.open` with only the `IMAGE_FORMATS` plugins: the one way cnnclf opens an image.

    Why: by default Pillow tries every plugin it has, about forty, and some hand the file to
    other programs (EPS to Ghostscript, with the upload written to /tmp). Training, prediction,
    serving, check-data and explain all open images here, so they read the same formats.

    Args:
        file: a path, or a binary file object positioned anywhere.

    Raises:
        PIL.UnidentifiedImageError: not one of those formats (or no image at all).
    """
    return Image.open(file, formats=IMAGE_FORMATS)


def header_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image, without decoding its pixels.

    Pillow decodes a whole PNG to look for EXIF after its pixels; such a (rare) EXIF is not
    read here, so a header stays cheap to read whatever the image's size.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    return image.getexif().get(0x0112, 1)


class _Refused(Exception):
    """A readable file refused by cnnclf's limits; its message is the reason `ImageError` gives."""


@dataclass(frozen=True)
class ImageSpec:
    """How a file becomes a model input; saved in the bundle's preprocessing.json."""

    image_size: tuple[int, int]  # (height, width)
    color_mode: str = "rgb"  # "rgb" | "grayscale"
    interpolation: str = "bilinear"

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "grayscale" else 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.image_size[0], self.image_size[1], self.channels)


def load_image(path: str, spec: ImageSpec) -> np.ndarray:
    """Decodes, orients, converts and resizes one image file.

    Args:
        path: a JPEG, PNG, BMP, GIF, TIFF or WebP file (`IMAGE_FORMATS`).
        spec: the target size, color mode and resize filter.

    Returns:
        A uint8 array of shape `spec.shape`, pixel values 0-255.

    Raises:
        ImageError: the file is not a regular file, unreadable, truncated, not an image in
            one of those formats, of an absurd shape, or too costly to decode.
    """
    path = os.fspath(path)
    with _decoding(path) as image:
        return _fit(image, spec)


def decode_image_bytes(data: bytes, spec: ImageSpec, name: str = "upload") -> np.ndarray:
    """`load_image` for an image already in memory (an upload): the same decode, same limits.

    Args:
        data: the encoded image (the bytes of a JPEG, PNG, ... file).
        spec: the target size, color mode and resize filter.
        name: what to call the image in an `ImageError` (never opened as a path).

    Returns:
        A uint8 array of shape `spec.shape`, pixel values 0-255.

    Raises:
        ImageError: empty, truncated, not an image in a format read, of an absurd shape, or
            too costly to decode.
    """
    with _decoding(name, data) as image:
        return _fit(image, spec)


def is_large_upload(data: bytes, spec: ImageSpec, name: str = "upload") -> bool:
    """Whether decoding `data` takes the large lane of the decode budget, from its header only.

    Why: a server decoding on a thread pool hands large images to threads of their own, so
    that however many arrive, they never hold every thread while they wait for memory.

    Raises:
        ImageError: what `decode_image_bytes` would refuse by the header alone (format, size,
            the memory it would need).
    """
    with _decoding(name, data) as image:
        return DECODE_BUDGET.is_large(_fit_cost(image, spec, _draft(image, spec)))


def _fit(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """The decoded, oriented, converted and resized pixels of an opened image."""
    cost = _fit_cost(image, spec, _draft(image, spec))
    # Image.open only read the header: the cost is known before any pixel is decoded.
    with DECODE_BUDGET.reserve(cost):
        try:
            _load(image)
            full_size = _takes_full_size_path(image)
            array = np.asarray((_fit_full_size if full_size else _fit_large)(image, spec))
        finally:
            image.close()  # frees the full-size pixels before the next decode starts
    if array.ndim == 2:
        array = array[:, :, None]
    return array.astype(np.uint8, copy=False)


def _draft(image: Image.Image, spec: ImageSpec) -> tuple[int, int]:
    """Asks a JPEG to decode at the smallest 1/2, 1/4 or 1/8 scale still >= the target size;
    returns the size stored in the file (a progressive JPEG's decoder holds that much)."""
    stored_size = image.size
    if image.format in ("JPEG", "MPO"):
        side = max(spec.image_size)
        image.draft("L" if spec.color_mode == "grayscale" else "RGB", (side, side))
    return stored_size


def _takes_full_size_path(image: Image.Image) -> bool:
    width, height = image.size
    return width * height <= _FULL_SIZE_PATH_PIXELS


def _fit_cost(image: Image.Image, spec: ImageSpec, stored_size: tuple[int, int]) -> int:
    """Peak bytes of `_fit` for an opened image: loading, then its path's copies and resize.

    Raises `_Refused` over the most one image may cost.
    """
    height, width = spec.image_size
    cost = load_cost(image, stored_size)
    if _takes_full_size_path(image):
        # Orienting makes a copy; converting one more, compositing on white (measured) three.
        alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
        copies = 1 + (3 if alpha else 0 if image.mode in ("L", "RGB") else 1)
        cost += copies * image_bytes(image.size, "RGBA")
        cost += resize_cost(image.size, (width, height), "RGBA", spec.interpolation)
    else:
        mode = _full_size_mode(image, spec) or image.mode
        if mode != image.mode:
            cost += image_bytes(image.size, mode)
        if mode in ("RGBA", "LA") and spec.interpolation != "nearest":
            cost += image_bytes(image.size, mode)  # Pillow resizes them premultiplied: a copy
        # Either way round: EXIF orientation swaps the target's sides, and a PNG's EXIF may
        # come after its pixels (Pillow decodes the whole image to read it).
        cost += max(
            resize_cost(image.size, target, mode, spec.interpolation)
            for target in ((width, height), (height, width))
        )
    return _admitted(image, cost)


def _admitted(image: Image.Image, cost: int) -> int:
    """`cost`, if one image may cost that much; else `_Refused` saying what it would need."""
    if cost > DECODE_BUDGET.most:
        width, height = image.size
        raise _Refused(
            f"too large to decode: its {width}x{height} {image.mode} pixels would need about "
            f"{cost // MIB:,} MB, over the {DECODE_BUDGET.most // MIB} MB one image may use; "
            "downscale it"
        )
    return cost


@dataclass(frozen=True)
class ImageInfo:
    """What `read_info` finds in a file: its format and decoded mode, size, EXIF orientation."""

    format: str | None
    mode: str
    size: tuple[int, int]  # (width, height), as stored (before EXIF orientation)
    orientation: int
    transparency: bool  # a transparent palette index or color key (alpha modes aside)


def read_info(path: str) -> ImageInfo:
    """Format, mode, size and orientation of one image, read with `load_image`'s guards.

    The file is decoded (GIF transparency and some modes are only known then), under the same
    regular-file check, limits and decode budget as `load_image`. Raises `ImageError` like it.
    """
    path = os.fspath(path)
    with (
        _decoding(path) as image,
        DECODE_BUDGET.reserve(_admitted(image, load_cost(image, image.size))),
    ):
        try:
            _load(image)
            orientation = image.getexif().get(0x0112, 1)
            return ImageInfo(
                image.format, image.mode, image.size, orientation, "transparency" in image.info
            )
        finally:
            image.close()


@contextlib.contextmanager
def _decoding(path: str, data: bytes | None = None):
    """An opened, not yet decoded image; every failure becomes one `ImageError` naming `path`.

    With `data`, the image is read from those bytes and `path` is only its name in messages.
    """
    try:
        with warnings.catch_warnings():
            # Pillow only *warns* between 1x and 2x its pixel limit: refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_regular(path) if data is None else io.BytesIO(data) as file:
                if data is not None and not data:
                    raise ImageError(path, "empty (0 bytes)")
                if data is None and os.fstat(file.fileno()).st_size == 0:
                    raise ImageError(
                        path,
                        "empty file (0 bytes): an interrupted copy or "
                        "download; re-copy or delete it",
                    )
                with open_image(file) as image:
                    _check_shape(image)
                    yield image
    except _Refused as exc:
        raise ImageError(path, str(exc)) from None
    except Image.UnidentifiedImageError:
        raise ImageError(
            path, f"not an image cnnclf reads ({_FORMAT_NAMES}): another format, or corrupt"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"refused as a possible decompression bomb ({exc})") from None
    except MemoryError:
        raise ImageError(path, "too large to decode in the memory available") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(path, f"cannot be decoded ({exc})") from None


def _load(image: Image.Image) -> None:
    """`image.load()`, refusing a PNG whose pixel data ends before its last row.

    Pillow leaves the rows after an early end of the stream as it allocated them, all zero
    bytes: only then (or for an interlaced PNG, whose last pass may be the one missing) is the
    stream inflated a second time to count what it holds (`png_data`), about 40% of a PNG
    decode's time, which ordinary images are spared.
    """
    file = getattr(image, "fp", None)  # Pillow lets go of it once loaded; the file stays open
    image.load()
    if image.format != "PNG" or file is None:
        return
    width, height = image.size
    last_row = image.crop((0, height - 1, width, height)).tobytes()
    if image.info.get("interlace") or last_row.count(0) == len(last_row):
        missing = png_data.missing_data(file)
        if missing:
            raise _Refused(missing)


def _check_shape(image: Image.Image) -> None:
    """Refuses a side over MAX_SIDE: Pillow's pixel limit alone lets 1x80,000,000 through."""
    width, height = image.size
    if max(width, height) > MAX_SIDE:
        raise _Refused(
            f"{width}x{height} pixels: a side over {MAX_SIDE:,}, the longest cnnclf reads "
            "(a crafted or broken file)"
        )


def _fit_full_size(image: Image.Image, spec: ImageSpec) -> Image.Image:
    """Orient, convert, then resize: the original order, exact for images of ordinary size."""
    height, width = spec.image_size
    image = ImageOps.exif_transpose(image)
    image = convert_mode(image, spec.color_mode)
    if image.size != (width, height):
        image = image.resize((width, height), _RESAMPLE[spec.interpolation])
    return image


def _fit_large(image: Image.Image, spec: ImageSpec) -> Image.Image:
    """Resize before the full-size copies that orienting and alpha compositing would make."""
    height, width = spec.image_size
    orientation = image.getexif().get(0x0112, 1)
    size = (height, width) if orientation in _SWAPS_SIDES else (width, height)
    mode = _full_size_mode(image, spec)
    if mode:
        image = image.convert(mode)
    if image.size != size:
        image = _resize(image, size, _RESAMPLE[spec.interpolation])
    image = convert_mode(image, spec.color_mode)  # composites RGBA on white, now small
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    return image


def _full_size_mode(image: Image.Image, spec: ImageSpec) -> str | None:
    """The mode a large image must be converted to before it can be resized; None: as it is.

    A palette cannot be interpolated, alpha modes are resized as RGBA, and the rare modes
    (CMYK, YCbCr, 1-bit ...) become RGB or L; L, RGB, RGBA and 16-bit and float images are
    resized as they are and converted once small.
    """
    if image.mode == "P":
        return "RGBA" if "transparency" in image.info else "RGB"
    if image.mode in _ALPHA_MODES and image.mode != "RGBA":
        return "RGBA"
    if image.mode in ("L", "RGB", "RGBA", "F", *_SIXTEEN_BIT_MODES):
        return None
    return "L" if spec.color_mode == "grayscale" else "RGB"


def _resize(image: Image.Image, size: tuple[int, int], resample) -> Image.Image:
    """`image.resize(size)` with a small temporary image, for the large path.

    Pillow resizes the width first, into a temporary image as tall as the source: 64 pixels
    wide by 65,535 tall for a tall strip. Resizing first along the axis that leaves the
    smaller temporary image keeps it small; the pixels are equal up to rounding.
    """
    (width, height), (out_width, out_height) = image.size, size
    if width != out_width and height != out_height and out_width * height > width * out_height:
        image = image.resize((width, out_height), resample)
    return image.resize(size, resample)


def convert_mode(image: Image.Image, color_mode: str) -> Image.Image:
    """Converts any Pillow mode to 'RGB' or 'L', compositing transparency on white."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # 16-bit (medical, scientific) images: map the full 16-bit range to 8 bits instead of
        # Pillow's convert('L'), which clips everything above 255 to white. Integer floor
        # division by 257 equals the float division it replaced, at a quarter of the memory.
        wide = np.asarray(image)
        if image.mode == "I":
            wide = np.clip(wide, 0, 65535)
        image = Image.fromarray((wide // 257).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _ALPHA_MODES:
        if image.mode != "RGBA":
            image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    target = "L" if color_mode == "grayscale" else "RGB"
    if image.mode != target:
        image = image.convert(target)
    return image
