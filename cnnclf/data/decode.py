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
`x.png` would block `open` forever, `/dev/zero` would be read without end), and the pixels being
decoded at once across all threads are capped (`_DECODE_BUDGET`), because a PNG of a few
hundred kilobytes can decode to a thousand times that.

Example:
    spec = ImageSpec(image_size=(64, 64), color_mode="rgb")
    array = load_image("cat.jpg", spec)  # uint8, shape (64, 64, 3)
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import io
import os
import stat
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from cnnclf.data.listing import file_kind, not_regular_reason
from cnnclf.errors import ImageError

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


class _PixelBudget:
    """Caps the pixels being decoded at once across threads, first come, first served.

    An image larger than the whole budget waits until nothing else decodes, then decodes alone,
    so it is slow but never refused. Callers are admitted in arrival order, so a large image is
    not starved by a stream of small ones.
    """

    def __init__(self, pixels: int):
        self.pixels = pixels
        self._in_use = 0
        self._waiting: collections.deque = collections.deque()
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, pixels: int):
        pixels = min(pixels, self.pixels)
        turn = object()
        with self._changed:
            self._waiting.append(turn)
            try:
                self._changed.wait_for(
                    lambda: self._waiting[0] is turn and self._in_use + pixels <= self.pixels
                )
            finally:
                # Admitted or interrupted (Ctrl-C while waiting): either way, out of the queue,
                # so no later caller waits for a turn that will never be taken.
                self._waiting.remove(turn)
                self._changed.notify_all()
            self._in_use += pixels
        try:
            yield
        finally:
            if pixels >= _FULL_SIZE_PATH_PIXELS:
                _return_freed_memory()
            with self._changed:
                self._in_use -= pixels
                self._changed.notify_all()


def _return_freed_memory() -> None:
    """Hands memory freed by a large decode back to the OS (glibc only; a no-op elsewhere).

    Pillow allocates in 16 MB blocks, which glibc serves from the decoding thread's own arena
    and keeps after they are freed: without this, large PNGs decoded one at a time by several
    threads keep the process's peak as high as if they were all decoded at once, each thread's
    arena keeping its last one.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


# libc's malloc_trim; False where there is none, None until looked up.
_MALLOC_TRIM: Callable[[int], object] | Literal[False] | None = None


# Process-wide on purpose: the memory it protects is the process's. 64 megapixels is about
# 250-450 MB of decode buffers; ordinary images (well under a megapixel) never wait on it.
_DECODE_BUDGET = _PixelBudget(64 * 2**20)


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
        path: an image file Pillow can read (JPEG, PNG, BMP, GIF, TIFF, WebP).
        spec: the target size, color mode and resize filter.

    Returns:
        A uint8 array of shape `spec.shape`, pixel values 0-255.

    Raises:
        ImageError: the file is not a regular file, unreadable, truncated, not an image, or
            absurdly large.
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
        ImageError: empty, truncated, not an image, or absurdly large.
    """
    with _decoding(name, data) as image:
        return _fit(image, spec)


def _fit(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """The decoded, oriented, converted and resized pixels of an opened image."""
    if image.format == "JPEG":
        # Decode at the smallest 1/2, 1/4 or 1/8 scale still >= the target size.
        side = max(spec.image_size)
        image.draft("L" if spec.color_mode == "grayscale" else "RGB", (side, side))
    # Image.open only read the header: the size is known before any pixel is.
    width, height = image.size
    with _DECODE_BUDGET.reserve(width * height):
        try:
            image.load()
            fit = _fit_full_size if width * height <= _FULL_SIZE_PATH_PIXELS else _fit_large
            array = np.asarray(fit(image, spec), dtype=np.uint8)
        finally:
            image.close()  # frees the full-size pixels before the next decode starts
    if array.ndim == 2:
        array = array[:, :, None]
    return array


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
    regular-file check and decode budget as `load_image`. Raises `ImageError` like it.
    """
    path = os.fspath(path)
    with _decoding(path) as image:
        width, height = image.size
        with _DECODE_BUDGET.reserve(width * height):
            try:
                image.load()
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
                with Image.open(file) as image:
                    yield image
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image Pillow can read (wrong format or corrupt)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"refused as a possible decompression bomb ({exc})") from None
    except MemoryError:
        raise ImageError(path, "too large to decode in the memory available") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(path, f"cannot be decoded ({exc})") from None


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
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _ALPHA_MODES and image.mode != "RGBA":
        image = image.convert("RGBA")
    elif not (image.mode == "RGBA" or (image.mode == "L" and spec.color_mode == "rgb")):
        image = convert_mode(image, spec.color_mode)  # to 'RGB' or 'L', never larger
    if image.size != size:
        image = image.resize(size, _RESAMPLE[spec.interpolation])
    image = convert_mode(image, spec.color_mode)  # composites RGBA on white, now small
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    return image


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
