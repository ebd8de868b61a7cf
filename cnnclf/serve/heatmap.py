"""/explain's answer: the Grad-CAM overlay `cnnclf explain` draws, as PNG bytes."""

from __future__ import annotations

import io

from cnnclf.bundle import Bundle
from cnnclf.data.decode import ImageSpec, decode_image_bytes, header_orientation, open_image


def grad_cam_png(bundle: Bundle, pixels, data: bytes, name: str):
    """(PNG bytes, label, probability): the Grad-CAM overlay `cnnclf explain` draws."""
    from cnnclf.inference.explain import grad_cam_pixels, overlay

    heatmap, prediction, note = grad_cam_pixels(bundle, pixels, name)
    out = io.BytesIO()
    overlay(
        _display_copy(data, name),
        heatmap,
        f"{prediction.label} {prediction.probability:.2f}",
        out,
        note=note,
    )
    return out.getvalue(), prediction.label, prediction.probability


DISPLAY_SIDE = 448  # longest side of the picture under a served heatmap


def _display_copy(data: bytes, name: str) -> io.BytesIO:
    """The upload, upright and at most DISPLAY_SIDE pixels long, as an in-memory PNG.

    Why: `overlay` draws on the original at full size; an upload can be tens of megapixels,
    and this decode goes through `decode_image_bytes`, with its limits and pixel budget.
    """
    from PIL import Image

    with open_image(io.BytesIO(data)) as image:  # reads the header only
        width, height = image.size
        if header_orientation(image) in (5, 6, 7, 8):  # EXIF says: sides swap upright
            width, height = height, width
    scale = min(1.0, DISPLAY_SIDE / max(width, height))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    pixels = decode_image_bytes(data, ImageSpec(size, "rgb", "bilinear"), name)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    out.seek(0)
    return out


def header_safe(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")
