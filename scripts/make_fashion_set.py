#!/usr/bin/env python3
"""Writes a class-folder data set (training_set/ and test_set/) from Fashion-MNIST.

Fashion-MNIST (Zalando Research, MIT licence) is read from the idx files that Debian's
`dataset-fashion-mnist` package installs (apt-get install dataset-fashion-mnist); nothing is
downloaded. Training images come from the official training split, test images from the
official test split, so the two never overlap.

Examples:
    # the bundled demo set (data/demo): sneaker vs ankle boot, small PNGs
    python scripts/make_fashion_set.py --out data/demo --classes sneaker ankle_boot \
        --train-per-class 600 --test-per-class 150
    # a harder, photo-like set: pullover vs coat as JPEGs of mixed sizes
    python scripts/make_fashion_set.py --out /tmp/coats --classes pullover coat \
        --format jpg --min-size 48 --max-size 160
"""

from __future__ import annotations

import argparse
import gzip
import random
import shutil
import struct
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = [
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
]


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    _, _dtype_code, ndim = struct.unpack(">HBB", data[:4])
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_split(images, labels, wanted, per_class, folder: Path, args, rng) -> int:
    written = 0
    for name in wanted:
        index = CLASSES.index(name)
        picks = np.flatnonzero(labels == index)[:per_class]
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in picks:
            image = Image.fromarray(images[i], mode="L")
            if args.max_size > 28 or args.min_size != 28:
                side = rng.randint(args.min_size, args.max_size)
                aspect = rng.uniform(0.8, 1.25) if args.min_size != args.max_size else 1.0
                image = image.resize((side, max(8, round(side * aspect))), Image.Resampling.BICUBIC)
            if args.rgb:
                image = image.convert("RGB")
            out = folder / name / f"{name}_{i:05d}.{args.format}"
            if args.format == "jpg":
                image.save(out, quality=rng.randint(75, 95))
            else:
                image.save(out, optimize=True)
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--classes", nargs="+", default=["sneaker", "ankle_boot"], choices=CLASSES)
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=150)
    parser.add_argument("--format", choices=["png", "jpg"], default="png")
    parser.add_argument("--min-size", type=int, default=28)
    parser.add_argument("--max-size", type=int, default=28)
    parser.add_argument("--rgb", action="store_true", help="write 3-channel images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", type=Path, default=SOURCE)
    args = parser.parse_args()
    if not (args.source / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(
            f"error: no Fashion-MNIST idx files in {args.source}: "
            "apt-get install dataset-fashion-mnist"
        )
    rng = random.Random(args.seed)
    if args.out.exists():
        shutil.rmtree(args.out)
    counts = {}
    for split, prefix, per_class in (
        ("training_set", "train", args.train_per_class),
        ("test_set", "t10k", args.test_per_class),
    ):
        images = read_idx(args.source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(args.source / f"{prefix}-labels-idx1-ubyte.gz")
        counts[split] = write_split(
            images, labels, args.classes, per_class, args.out / split, args, rng
        )
    print(f"wrote {counts} images of {', '.join(args.classes)} to {args.out}")


if __name__ == "__main__":
    main()
