#!/usr/bin/env python3
"""Does starting from an earlier bundle help with few images? A re-runnable experiment.

On Fashion-MNIST (Debian's `dataset-fashion-mnist`, MIT licence; nothing is downloaded):

1. a *source* bundle is trained on the eight classes that are not the target pair
   (configs/recommended.yaml's model at 28x28 grayscale);
2. the *target* task is pullover vs coat, the pair Fashion-MNIST models confuse most, with
   25, 100 and 400 training images a class and 500 held-out test images a class from the
   official test split;
3. each size is trained three ways, each with several seeds:
   - scratch:   configs/recommended.yaml as it is (12 epochs);
   - frozen:    model.init_from the source bundle, its conv blocks frozen, a new head
                trained for the same 12 epochs;
   - fine_tune: the same, then train.fine_tune: 8 more epochs with everything unfrozen at
                learning rate 1e-4.

It prints held-out accuracy as mean ± standard deviation over the seeds, and wall time per run,
and writes every run's figures as JSON. Everything trains in this one process (TensorFlow is
imported once).

Example:
    python scripts/transfer_experiment.py --seeds 1 2 3 --out /tmp/transfer.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ["pullover", "coat"]
SOURCE = ["tshirt_top", "trouser", "dress", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
COMMON = ["data.image_size=[28, 28]", "data.color_mode=grayscale", "data.cache=memory"]


def make_set(out: Path, classes: list[str], train: int, test: int) -> Path:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_fashion_set.py"),
            "--out",
            str(out),
            "--classes",
            *classes,
            "--train-per-class",
            str(train),
            "--test-per-class",
            str(test),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def run(data: Path, out: Path, seed: int, extra: list[str]) -> dict:
    from cnnclf.config import load_config
    from cnnclf.training.run import train

    config = load_config(
        ROOT / "configs" / "recommended.yaml",
        [
            f"data.train_dir={data / 'training_set'}",
            f"data.test_dir={data / 'test_set'}",
            f"train.seed={seed}",
            *COMMON,
            *extra,
        ],
    )
    started = time.perf_counter()
    result = train(config, out_dir=out, progress=0)
    seconds = time.perf_counter() - started
    metrics = json.loads((result.bundle_dir / "metrics.json").read_text())
    return {
        "accuracy": metrics["accuracy"],
        "seconds": round(seconds, 1),
        "epochs": len(result.history.get("epoch", [])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[25, 100, 400],
        help="training images a class for the target pair",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--source-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=500)
    parser.add_argument("--out", type=Path, help="write every run's figures here as JSON")
    args = parser.parse_args()
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        sys.exit("needs Fashion-MNIST: apt-get install dataset-fashion-mnist")

    from cnnclf.tf_loader import import_tensorflow, quiet_keras_warnings

    import_tensorflow(False)
    quiet_keras_warnings()
    work = Path(tempfile.mkdtemp(prefix="cnnclf-transfer-"))
    source_data = make_set(work / "source-data", SOURCE, args.source_per_class, 100)
    started = time.perf_counter()
    source = run(source_data, work / "source", 1, [])
    print(
        f"source bundle: {len(SOURCE)} classes x {args.source_per_class} images, "
        f"accuracy {source['accuracy']:.3f} on its own test split, {source['seconds']} s",
        flush=True,
    )
    ways = {
        "scratch": [],
        "frozen": [f"model.init_from={work / 'source'}"],
        "fine_tune": [
            f"model.init_from={work / 'source'}",
            "train.fine_tune={epochs: 8, unfreeze: all, learning_rate: 1.0e-4}",
        ],
    }
    rows = []
    print(
        f"\n{'images/class':>12} {'way':>10} {'accuracy mean ± sd':>20} {'s/run':>7}  per seed",
        flush=True,
    )
    for size in args.sizes:
        data = make_set(work / f"target-{size}", TARGET, size, args.test_per_class)
        for way, extra in ways.items():
            runs = [run(data, work / f"{size}-{way}-{seed}", seed, extra) for seed in args.seeds]
            accuracies = [r["accuracy"] for r in runs]
            sd = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
            seconds = statistics.mean(r["seconds"] for r in runs)
            rows.append(
                {
                    "images_per_class": size,
                    "way": way,
                    "runs": runs,
                    "mean_accuracy": statistics.mean(accuracies),
                    "sd": sd,
                    "mean_seconds": seconds,
                }
            )
            print(
                f"{size:>12} {way:>10} {statistics.mean(accuracies):>12.3f} ± {sd:.3f} "
                f"{seconds:>7.1f}  {' '.join(f'{a:.3f}' for a in accuracies)}",
                flush=True,
            )
    print(f"\ntotal {time.perf_counter() - started:.0f} s; runs in {work}")
    if args.out:
        args.out.write_text(
            json.dumps({"source": source, "rows": rows, "seeds": args.seeds}, indent=1)
        )


if __name__ == "__main__":
    main()
