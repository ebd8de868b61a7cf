"""Grad-CAM: which parts of an image drove the prediction, as a heatmap over the image.

Grad-CAM (Selvaraju et al., 2017) weights the last convolution block's feature maps by the
gradient of the predicted class's score and keeps the positive part. It needs the Keras model
(gradients), so it works on bundles, not on exports. The heatmap is computed on the model's
input (resized, as in training) and drawn over the original image at its own size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from cnnclf.bundle import Bundle
from cnnclf.data.decode import load_image, open_image
from cnnclf.inference.predict import Prediction, interpret, interpret_multi_label


def last_conv_activation(model) -> str:
    """Name of the output of the last convolution block, before pooling.

    For a pretrained backbone (a nested model) that is the backbone itself: its output is its
    last convolutional feature map (built without its top and pooling).
    """
    import keras

    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        return nested[-1]
    names = [layer.name for layer in model.layers]
    convs = [n for n in names if n.startswith("conv")]
    if not convs:
        raise ValueError("the model has no convolution layer")
    after = names[names.index(convs[-1]) + 1 :]
    relu = next((n for n in after if n.startswith("relu")), None)
    return relu or convs[-1]


# Below this the map is rounding noise, not a signal: stretching it to [0, 1] would paint noise
# (or, at exactly 0, an all-blue map that looks like "nothing mattered" rather than "no answer").
EMPTY_MAP = 1e-10
NO_POSITIVE_GRADIENT = "no positive gradient for the predicted class"
NOT_FINITE = "the gradient is not a finite number"
# Caption text in pixels: MIN_FONT_SIZE gives capitals about 14 px tall; larger images get
# proportionally larger text, so it reads the same when the PNG is viewed fitted to a screen.
MIN_FONT_SIZE = 20
FONT_FRACTION = 1 / 14  # of the shorter side of one panel


def normalise_cam(cam: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(map in [0, 1], note): the raw class-activation map scaled by its maximum.

    Args:
        cam: the raw Grad-CAM map (ReLU of the gradient-weighted feature maps), any shape.

    Returns:
        `cam / cam.max()` and None; or, when no cell is above `EMPTY_MAP` (the predicted
        class's score has no positive gradient anywhere) or the map is not finite, an all-zero
        map and a note saying which, for the caption and the CLI row.

    Example:
        normalise_cam(np.zeros((4, 4)))[1]  # "no positive gradient for the predicted class"
    """
    cam = np.asarray(cam, np.float32)
    if not np.all(np.isfinite(cam)):
        return np.zeros_like(cam), NOT_FINITE
    peak = float(cam.max()) if cam.size else 0.0
    if peak <= EMPTY_MAP:
        return np.zeros_like(cam), NO_POSITIVE_GRADIENT
    return np.clip(cam / peak, 0.0, 1.0), None


def grad_cam(
    bundle: Bundle, path: str, class_name: str | None = None
) -> tuple[np.ndarray, Prediction, str | None]:
    """(heatmap in [0, 1] at the model's input size, Prediction, note) for one image.

    The map is for `class_name`, or for the predicted label. `note` is None for a usable map;
    otherwise it says why the heatmap is all zero (see `normalise_cam`).
    """
    return grad_cam_pixels(bundle, load_image(path, bundle.preprocessing.spec), path, class_name)


def grad_cam_pixels(
    bundle: Bundle, pixels: np.ndarray, path: str, class_name: str | None = None
) -> tuple[np.ndarray, Prediction, str | None]:
    """`grad_cam` for an image already decoded by `data.decode.load_image` or `decode_image_bytes`.

    `path` only names the image in the Prediction.
    """
    prediction = predict_pixels(bundle, pixels, path)
    heatmap, note = class_map(bundle, pixels, class_name or prediction.label)
    return heatmap, prediction, note


def predict_pixels(bundle: Bundle, pixels: np.ndarray, path: str) -> Prediction:
    """The Prediction `cnnclf predict` makes for one decoded image (multi-label: `labels`)."""
    model: Any = bundle.model  # a keras.Model
    probs = np.asarray(model.predict_on_batch(np.asarray(pixels, np.float32)[None]))[0]
    if bundle.preprocessing.multi_label:
        return interpret_multi_label(
            probs, bundle.class_names, bundle.preprocessing.thresholds, path
        )
    return interpret(probs, bundle.class_names, bundle.preprocessing.threshold, path)


def explained_classes(prediction: Prediction, class_name: str | None) -> list[str]:
    """The classes to draw a map for: `class_name`; else each label of a multi-label
    prediction (the most probable class when none is over its threshold); else the label."""
    if class_name is not None:
        return [class_name]
    return list(prediction.labels or [prediction.label])


def class_map(bundle: Bundle, pixels: np.ndarray, class_name: str) -> tuple[np.ndarray, str | None]:
    """(heatmap in [0, 1] at the model's input size, note): Grad-CAM for `class_name`'s score."""
    import tensorflow as tf

    model: Any = bundle.model  # a keras.Model
    target = last_conv_activation(model)
    index = bundle.class_names.index(class_name)
    x = tf.constant(np.asarray(pixels, np.float32)[None])
    with tf.GradientTape() as tape:
        # The model is a plain stack: run it layer by layer and keep the target activation.
        features: Any = None
        h = x
        for layer in model.layers:
            h = layer(h, training=False)
            if layer.name == target:
                features = h
        probs = h
        if probs.shape[-1] == 1:  # sigmoid: P(class 1); class 0's score is 1 - p
            score = probs[:, 0] if index == 1 else 1.0 - probs[:, 0]
        else:  # softmax, or one sigmoid per class (multi-label)
            score = probs[:, index]
    grads = tape.gradient(score, features)[0]
    weights = tf.reduce_mean(grads, axis=(0, 1))
    cam, note = normalise_cam(tf.nn.relu(tf.reduce_sum(features[0] * weights, axis=-1)).numpy())
    height, width = bundle.preprocessing.spec.image_size
    heat = Image.fromarray(np.uint8(cam * 255)).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(heat, np.float32) / 255.0, note


def caption(prediction: Prediction, class_name: str) -> str:
    """ "cat 0.93", and for a multi-label class under its threshold, says so."""
    p = prediction.probabilities[class_name]
    if prediction.labels is None or class_name in prediction.labels:
        return f"{class_name} {p:.2f}"
    thresholds = prediction.thresholds or {}
    under = f"under its threshold {thresholds.get(class_name, 0.5):.2f}"
    return f"{class_name} {p:.2f} ({under}; " + (
        f"labels: {', '.join(prediction.labels)})" if prediction.labels else "no label)"
    )


def caption_font_size(panel_size: tuple[int, int]) -> int:
    """Caption text size in pixels for panels of `panel_size` (width, height)."""
    return max(MIN_FONT_SIZE, round(min(panel_size) * FONT_FRACTION))


def overlay(
    path: str | Path | IO[bytes],
    heatmap: np.ndarray,
    caption: str,
    out: Path | IO[bytes],
    alpha: float = 0.45,
    note: str | None = None,
):
    """Draws `heatmap` (jet colours) over the upright original image, with a caption strip.

    With a `note` (no usable map) the right panel shows the image greyed out with the note
    written across it, instead of a uniformly blue map that reads as an answer. `path` and
    `out` may also be binary file objects (an upload in memory, a response body); the result
    is a PNG either way.
    """
    from matplotlib import colormaps

    with open_image(path) as original:
        image = ImageOps.exif_transpose(original).convert("RGB")
    scale = max(1.0, 224 / min(image.size))  # small inputs (28 px) become visible
    if scale > 1:
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.NEAREST
        )
    size = caption_font_size(image.size)
    font = ImageFont.load_default(size=size)
    if note:
        grey = ImageOps.grayscale(image).convert("RGB")
        right = Image.blend(grey, Image.new("RGB", image.size, "white"), 0.6)
        _draw_centred(right, _wrap(note, font, right.width - size), font)
    else:
        heat = Image.fromarray(np.uint8(heatmap * 255)).resize(
            image.size, Image.Resampling.BILINEAR
        )
        colours = Image.fromarray(
            np.uint8(colormaps["jet"](np.asarray(heat) / 255.0)[..., :3] * 255)
        )
        right = Image.blend(image, colours, alpha)
    lines = _wrap(caption, font, image.width * 2 - size)
    line_height = round(size * 1.25)
    strip = line_height * len(lines) + size // 2
    canvas = Image.new("RGB", (image.width * 2, image.height + strip), "white")
    canvas.paste(image, (0, strip))
    canvas.paste(right, (image.width, strip))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((size // 2, size // 4 + i * line_height), line, fill="black", font=font)
    canvas.save(out, format="PNG")
    return out


def _wrap(text: str, font, width: int) -> list[str]:
    """`text` in lines no wider than `width` pixels: broken at spaces, or inside a long word."""
    lines, line = [], None
    for word in text.split(" "):
        candidate = word if line is None else f"{line} {word}"
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line is not None:
            lines.append(line)
        while len(word) > 1 and font.getlength(word) > width:  # a long file name
            cut = max(
                (n for n in range(1, len(word)) if font.getlength(word[:n]) <= width), default=1
            )
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    return lines + [line or ""]


def _draw_centred(image: Image.Image, lines: list[str], font) -> None:
    """Writes `lines` in the middle of `image`, dark on a white band, one under the other."""
    draw = ImageDraw.Draw(image)
    line_height = round(font.size * 1.25)
    top = (image.height - line_height * len(lines)) // 2
    draw.rectangle(
        (0, top - font.size // 4, image.width, top + line_height * len(lines) + font.size // 4),
        fill="white",
    )
    for i, line in enumerate(lines):
        left = (image.width - font.getlength(line)) / 2
        draw.text((left, top + i * line_height), line, fill="black", font=font)


def explain(
    bundle: Bundle, paths: list[str], out_dir: str | Path, class_name: str | None = None
) -> list[dict]:
    """Writes Grad-CAM overlays into `out_dir`; returns one row per overlay written.

    `<image stem>_gradcam.png` for a single-label bundle (the predicted label, or
    `class_name`); for a multi-label one `<image stem>_gradcam_<class>.png` per predicted label
    (or for `class_name` alone). Each row: path, label (the class the map is for),
    probability (of that class), heatmap (the PNG) and note (None, or why the image has no
    heatmap: see `normalise_cam`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        pixels = load_image(path, bundle.preprocessing.spec)
        prediction = predict_pixels(bundle, pixels, path)
        for name in explained_classes(prediction, class_name):
            heatmap, note = class_map(bundle, pixels, name)
            suffix = f"_{_file_part(name)}" if bundle.preprocessing.multi_label else ""
            target = out_dir / f"{Path(path).stem}_gradcam{suffix}.png"
            overlay(
                path,
                heatmap,
                f"{caption(prediction, name)}  ({Path(path).name})",
                target,
                note=note,
            )
            written.append(
                {
                    "path": path,
                    "label": name,
                    "probability": prediction.probabilities[name],
                    "heatmap": str(target),
                    "note": note,
                }
            )
    return written


def _file_part(class_name: str) -> str:
    """A class name as it can appear in a file name (label files allow `/` or `:` in one)."""
    return re.sub(r"[^\w.-]", "_", class_name)
