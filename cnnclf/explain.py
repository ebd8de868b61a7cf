"""Grad-CAM: which parts of an image drove the prediction, as a heatmap over the image.

Grad-CAM (Selvaraju et al., 2017) weights the last convolution block's feature maps by the
gradient of the predicted class's score and keeps the positive part. It needs the Keras model
(gradients), so it works on bundles, not on exports. The heatmap is computed on the model's
input (resized, as in training) and drawn over the original image at its own size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from cnnclf.bundle import Bundle
from cnnclf.images import load_image
from cnnclf.predict import interpret


def last_conv_activation(model) -> str:
    """Name of the output of the last convolution block, before pooling."""
    names = [layer.name for layer in model.layers]
    convs = [n for n in names if n.startswith("conv")]
    if not convs:
        raise ValueError("the model has no convolution layer")
    after = names[names.index(convs[-1]) + 1:]
    relu = next((n for n in after if n.startswith("relu")), None)
    return relu or convs[-1]


def grad_cam(bundle: Bundle, path: str) -> tuple[np.ndarray, object]:
    """(heatmap in [0, 1] at the model's input size, Prediction) for one image."""
    import tensorflow as tf

    model = bundle.model
    target = last_conv_activation(model)
    x = tf.constant(load_image(path, bundle.preprocessing.spec).astype(np.float32)[None])
    with tf.GradientTape() as tape:
        # The model is a plain stack: run it layer by layer and keep the target activation.
        features, h = None, x
        for layer in model.layers:
            h = layer(h, training=False)
            if layer.name == target:
                features = h
        probs = h
        prediction = interpret(np.asarray(probs)[0], bundle.class_names,
                               bundle.preprocessing.threshold, path)
        index = bundle.class_names.index(prediction.label)
        if probs.shape[-1] == 1:  # sigmoid: P(class 1); class 0's score is 1 - p
            score = probs[:, 0] if index == 1 else 1.0 - probs[:, 0]
        else:
            score = probs[:, index]
    grads = tape.gradient(score, features)[0]
    weights = tf.reduce_mean(grads, axis=(0, 1))
    cam = tf.nn.relu(tf.reduce_sum(features[0] * weights, axis=-1)).numpy()
    cam = cam / cam.max() if cam.max() > 0 else cam
    height, width = bundle.preprocessing.spec.image_size
    heat = Image.fromarray(np.uint8(cam * 255)).resize((width, height),
                                                        Image.Resampling.BILINEAR)
    return np.asarray(heat, np.float32) / 255.0, prediction


def overlay(path: str, heatmap: np.ndarray, caption: str, out: Path, alpha: float = 0.45):
    """Draws `heatmap` (jet colours) over the upright original image, with a caption strip."""
    from matplotlib import colormaps

    with Image.open(path) as original:
        image = ImageOps.exif_transpose(original).convert("RGB")
    scale = max(1.0, 224 / min(image.size))  # small inputs (28 px) become visible
    if scale > 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.Resampling.NEAREST)
    heat = Image.fromarray(np.uint8(heatmap * 255)).resize(image.size, Image.Resampling.BILINEAR)
    colours = Image.fromarray(np.uint8(colormaps["jet"](np.asarray(heat) / 255.0)[..., :3]
                                       * 255))
    blended = Image.blend(image, colours, alpha)
    canvas = Image.new("RGB", (blended.width * 2, blended.height + 28), "white")
    canvas.paste(image, (0, 28))
    canvas.paste(blended, (blended.width, 28))
    ImageDraw.Draw(canvas).text((6, 8), caption, fill="black")
    canvas.save(out)
    return out


def explain(bundle: Bundle, paths: list[str], out_dir: str | Path) -> list[dict]:
    """Writes `<image stem>_gradcam.png` per image into `out_dir`; returns what was written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        heatmap, prediction = grad_cam(bundle, path)
        target = out_dir / f"{Path(path).stem}_gradcam.png"
        caption = f"{prediction.label} {prediction.probability:.2f}  ({Path(path).name})"
        overlay(path, heatmap, caption, target)
        written.append({"path": path, "label": prediction.label,
                        "probability": prediction.probability, "heatmap": str(target)})
    return written
