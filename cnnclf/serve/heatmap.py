"""/explain's answer: the Grad-CAM overlay `cnnclf explain` draws, as PNG bytes."""

from __future__ import annotations

import io

from cnnclf.bundle import Bundle
from cnnclf.data.decode import ImageSpec, decode_image_bytes, header_orientation, open_image


def grad_cam_png(bundle: Bundle, pixels, data: bytes, name: str, class_name: str | None = None):
    """(PNG bytes, classes, probabilities): the Grad-CAM overlay `cnnclf explain` draws.

    For `class_name`, else the predicted label; for a multi-label bundle, one overlay per
    predicted label (the most probable class when none is over its threshold), stacked top to
    bottom in one PNG, so that one request still answers with one image.
    """
    from PIL import Image

    from cnnclf.inference.explain import (
        caption,
        class_map,
        explained_classes,
        overlay,
        predict_pixels,
    )

    prediction = predict_pixels(bundle, pixels, name)
    classes = explained_classes(prediction, class_name)
    display = _display_copy(data, name).getvalue()
    panels = []
    for target in classes:
        heatmap, note = class_map(bundle, pixels, target)
        out = io.BytesIO()
        overlay(io.BytesIO(display), heatmap, caption(prediction, target), out, note=note)
        out.seek(0)
        with Image.open(out) as drawn:
            panels.append(drawn.convert("RGB"))
    canvas = Image.new(
        "RGB", (max(p.width for p in panels), sum(p.height for p in panels)), "white"
    )
    top = 0
    for panel in panels:
        canvas.paste(panel, (0, top))
        top += panel.height
    png = io.BytesIO()
    canvas.save(png, format="PNG")
    return png.getvalue(), classes, [prediction.probabilities[c] for c in classes]


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
