"""The one image decoder that training, validation and prediction all use.

If training and prediction decoded images differently (another resize filter, EXIF rotation
applied in one and not the other), a model would silently see different pixels at prediction
time. So there is exactly one function, `load_image`, and an `ImageSpec` that the bundle stores.

Pillow rather than `tf.io.decode_image`: it applies EXIF orientation, converts CMYK, palette,
RGBA and 16-bit images, decodes JPEGs at reduced size when the target is much smaller (DCT
scaling via `draft`), reports which file is broken instead of failing a whole batch, and releases
the GIL while decoding and resizing, so a thread pool or a parallel `tf.data` map scales.
Rescaling to [0, 1] is *not* done here: it lives inside the model, so no caller can forget it.

Example:
    spec = ImageSpec(image_size=(64, 64), color_mode="rgb")
    array = load_image("cat.jpg", spec)  # uint8, shape (64, 64, 3)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from cnnclf.errors import ImageError

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


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
        ImageError: the file is unreadable, truncated, not an image, or absurdly large.
    """
    height, width = spec.image_size
    try:
        with warnings.catch_warnings():
            # Pillow only *warns* between 1x and 2x its pixel limit: refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format == "JPEG":
                    # Decode at the smallest 1/2, 1/4 or 1/8 scale still >= the target size.
                    side = max(height, width)
                    image.draft("L" if spec.color_mode == "grayscale" else "RGB", (side, side))
                image = ImageOps.exif_transpose(image)
                image = convert_mode(image, spec.color_mode)
                if image.size != (width, height):
                    image = image.resize((width, height), _RESAMPLE[spec.interpolation])
                array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image Pillow can read (wrong format or corrupt)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"refused as a possible decompression bomb ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(path, f"cannot be decoded ({exc})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return array


def convert_mode(image: Image.Image, color_mode: str) -> Image.Image:
    """Converts any Pillow mode to 'RGB' or 'L', compositing transparency on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (medical, scientific) images: map the full 16-bit range to 8 bits instead of
        # Pillow's convert('L'), which clips everything above 255 to white.
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(wide / 257.0, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    target = "L" if color_mode == "grayscale" else "RGB"
    if image.mode != target:
        image = image.convert(target)
    return image
