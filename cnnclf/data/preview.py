"""`cnnclf preview-augment`: a grid of training images after the configured augmentation.

Uses exactly the training path (`decode.load_image`, then `augment.make_augmenter`), so what
the grid shows is what the model is trained on: the tutorial's shear 0.2 (degrees) next to
zoom 0.2, say, is plain to see.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cnnclf.config import Config
from cnnclf.data.decode import ImageSpec, load_image
from cnnclf.data.layout import discover


def preview_grid(
    config: Config, n: int, out: str | Path, seed: int | None = None, cell: int = 128
) -> dict:
    """Writes a grid PNG: each column pair shows an image before and after augmentation."""
    import tensorflow as tf

    from cnnclf.data.augment import is_active, make_augmenter

    seed = config.train.seed if seed is None else seed
    dataset = discover(config.data, config.train.seed)
    spec = ImageSpec(
        tuple(config.data.image_size), config.data.color_mode, config.data.interpolation
    )
    picks = random.Random(seed).sample(range(len(dataset.train)), min(n, len(dataset.train)))
    paths = [dataset.train.paths[i] for i in picks]
    names = [_caption(dataset, i) for i in picks]
    originals = np.stack([load_image(p, spec) for p in paths]).astype(np.float32)
    augmented = originals
    if is_active(config.augment):
        augmenter = make_augmenter(config.augment, spec.image_size)
        augmented = augmenter(tf.constant(originals), tf.constant([seed, 0], tf.int64)).numpy()
    columns = max(1, math.ceil(math.sqrt(len(paths))))
    rows = math.ceil(len(paths) / columns)
    label = 16
    grid = Image.new("RGB", (columns * 2 * cell, rows * (cell + label)), "white")
    draw = ImageDraw.Draw(grid)
    for k, (before, after, name) in enumerate(zip(originals, augmented, names)):
        r, c = divmod(k, columns)
        x, y = c * 2 * cell, r * (cell + label)
        for offset, array in ((0, before), (cell, after)):
            tile = Image.fromarray(
                np.clip(array, 0, 255).astype(np.uint8).squeeze(-1)
                if array.shape[-1] == 1
                else np.clip(array, 0, 255).astype(np.uint8)
            )
            grid.paste(
                tile.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST),
                (x + offset, y + label),
            )
        draw.text((x + 3, y + 2), f"{name}: original | augmented", fill="black")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return {"out": str(out), "images": len(paths), "size": list(grid.size)}


def _caption(dataset, index: int) -> str:
    """The image's class, or for a multi-label set its labels joined ("(none)" for none)."""
    split = dataset.train
    if split.label_sets is not None:
        return " ".join(dataset.class_names[c] for c in split.label_sets[index]) or "(none)"
    return dataset.class_names[split.labels[index]]
