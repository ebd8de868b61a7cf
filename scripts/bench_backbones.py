#!/usr/bin/env python3
"""Per backbone at its default image size: parameters, bundle size, training and predict speed.

Each backbone is trained by `cnnclf train` itself (the real pipeline, augmentation included)
with `weights: none` (no download; speed does not depend on the weights) on synthetic
224x224 images: two frozen epochs (the head only, what phase 1 costs) and two fine-tuning
epochs (everything unfrozen). Steady speed is read from the second epoch of each phase
(`epoch_seconds` in history.json, validation on a few images included). Predict speed is
`cnnclf.inference.predict.predict_paths` over the same images after one warm-up batch.

Example:
    python scripts/bench_backbones.py --images 64 --names mobilenet_v3_small resnet50_v2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    from cnnclf.model.backbones import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="+", default=list(BACKBONES))
    parser.add_argument("--images", type=int, default=64, help="training images (2 classes)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from conftest import make_tree  # the test fixtures' striped images, at mixed sizes

    from cnnclf.bundle import load_bundle
    from cnnclf.config import load_config
    from cnnclf.inference.predict import predict_paths
    from cnnclf.tf_loader import import_tensorflow, quiet_keras_warnings
    from cnnclf.training.run import train

    import_tensorflow(False)
    quiet_keras_warnings()
    work = Path(tempfile.mkdtemp(prefix="cnnclf-backbones-"))
    tree = make_tree(work / "data", n_classes=2, n_train=args.images // 2, n_test=4)
    images = sorted(str(p) for p in (tree / "training_set").rglob("*.*"))
    print(
        f"{'backbone':<20} {'params':>12} {'bundle MB':>10} {'train img/s':>12} "
        f"{'fine-tune img/s':>16} {'predict img/s':>14}",
        flush=True,
    )
    for name in args.names:
        spec = BACKBONES[name]
        raw = {
            "data": {
                "train_dir": str(tree / "training_set"),
                "test_dir": str(tree / "test_set"),
                "image_size": [spec.default_size] * 2,
                "batch_size": args.batch_size,
            },
            "augment": {"horizontal_flip": True, "zoom_range": 0.1},
            "model": {"backbone": {"name": name, "weights": "none"}},
            "train": {"epochs": 2, "seed": 1, "fine_tune": {"epochs": 2, "learning_rate": 1e-5}},
        }
        config_path = work / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(raw))
        result = train(load_config(config_path), out_dir=work / name, progress=0)
        seconds = result.history["epoch_seconds"]
        n = len(images)
        bundle = load_bundle(work / name)
        list(predict_paths(bundle, images[: args.batch_size], batch_size=args.batch_size))
        started = time.perf_counter()
        list(predict_paths(bundle, images, batch_size=args.batch_size))
        predict_rate = n / (time.perf_counter() - started)
        params = bundle.model.count_params()
        print(
            f"{name:<20} {params:>12,} {folder_mb(work / name):>10.1f} "
            f"{n / seconds[1]:>12.1f} {n / seconds[3]:>16.1f} {predict_rate:>14.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
