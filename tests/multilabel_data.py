"""A tiny multi-label set made by code, and a bundle trained on it: shared by the tests of
multi-label serving, export and explain, and the page's browser test."""

import numpy as np
from helpers import run_cli, write_config
from PIL import Image

CLASSES = ("left", "right", "top")


def mosaic(labels: set[str], seed: int) -> Image.Image:
    """A 24x24 image: a bright block in each labelled region, noise elsewhere."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, size=(24, 24)).astype(np.uint8)
    if "left" in labels:
        pixels[12:, :8] = 230
    if "right" in labels:
        pixels[12:, 16:] = 230
    if "top" in labels:
        pixels[:8, 6:18] = 230
    return Image.fromarray(pixels, "L").convert("RGB")


def write_label_file(folder, name: str, n: int, offset: int) -> None:
    """`<name>.csv` (path,labels) over n images cycling through every combination of labels."""
    rows = ["path,labels"]
    for i in range(n):
        labels = {c for j, c in enumerate(CLASSES) if (i + offset) >> j & 1}
        path = folder / "img" / f"{name}_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        mosaic(labels, i + offset).save(path)
        rows.append(f"img/{path.name},{' '.join(sorted(labels))}")
    (folder / f"{name}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def train_multi_label(data, work, epochs: int = 20):
    """A multi-label bundle trained on `data`'s train.csv/test.csv; its folder."""
    config = write_config(
        work / "c.yaml",
        data,
        data={
            "train_dir": str(data / "train.csv"),
            "test_dir": str(data / "test.csv"),
            "image_size": [16, 16],
            "batch_size": 8,
        },
        augment={"rescale": "1/255"},
        train={"epochs": epochs, "seed": 3, "threshold": "f1"},
    )
    result = run_cli("train", "--config", config, "--out", work / "bundle")
    assert result.exit_code == 0, result.output
    return work / "bundle"
