#!/usr/bin/env python3
"""Calibration (train.calibrate) and test-time augmentation (--tta), side by side in one run.

For each data set and seed, one training run of configs/demo.yaml (its small CNN, flips and
zoom) with `--set train.epochs=N`; the temperature is fitted on a validation split of the
training images (data.test_dir off), so the test set stays held out. Then, on the test set, in
this process:
  - ECE (15 bins, top label) and Brier score of the calibrated bundle, and of the probabilities
    before calibration (recovered from the recorded T; `evaluate`'s report gives both);
  - accuracy and wall seconds of `evaluate` without and with --tta (each timed after a warm-up
    call, so tracing is not counted).

Data sets, both made by scripts/make_fashion_set.py from Debian's idx files in
/usr/share/datasets/fashion-mnist: the demo's classes (sneaker vs ankle boot: data/demo's own
600 training images a class, and --test-per-class test images, of which data/demo holds the
first 150) and a harder pair (default pullover vs coat). A few hundred test images cannot
tell an ECE of 0.03 from one of 0.01 (`ece_noise`), hence the larger test sets.

`ece_noise` (evaluate's report) is the mean ECE that perfectly calibrated probabilities with the
same confidences show on the same number of images: ECE's sampling noise. An ECE near it is as
calibrated as the test set can tell.

Example:
    python scripts/bench_calibration_tta.py --seeds 1 2 --epochs 4
    python scripts/bench_calibration_tta.py --epochs 15 --set model.dropout=0 \
        --set augment.zoom_range=0 --set augment.horizontal_flip=false   # over-confident
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

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo.yaml"


def train(data: Path, out: Path, seed: int, epochs: int, overrides: list[str]) -> dict:
    """One `cnnclf train` process; returns bundle.json's calibration record and wall seconds."""
    command = [
        sys.executable, "-m", "cnnclf", "train", "--config", str(CONFIG), "--out", str(out),
        "--device", "cpu",
        "--set", f"data.train_dir={data / 'training_set'}", "--set", "data.test_dir=null",
        "--set", "data.validation_split=0.2",
        "--set", f"train.epochs={epochs}", "--set", f"train.seed={seed}",
    ]  # fmt: skip
    for override in overrides:
        command += ["--set", override]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    record = json.loads((out / "bundle.json").read_text())
    return {"calibration": record["calibration"], "train_s": time.monotonic() - started}


def measure(bundle_dir: Path, test_dir: Path) -> dict:
    """ECE/Brier before and after, accuracy and seconds without and with TTA, on `test_dir`."""
    from cnnclf.bundle import load_bundle
    from cnnclf.inference.evaluate import evaluate

    bundle = load_bundle(bundle_dir)
    evaluate(bundle, test_dir, batch_size=64)  # warm-up: trace the predict function
    started = time.monotonic()
    plain = evaluate(bundle, test_dir, batch_size=64)
    plain_s = time.monotonic() - started
    started = time.monotonic()
    tta = evaluate(bundle, test_dir, batch_size=64, tta=True)
    tta_s = time.monotonic() - started
    cal = plain["calibration"]
    return {
        "test_images": sum(plain["images_per_class"].values()),
        "ece_noise": cal["ece_noise"],
        "temperature": cal.get("temperature"),
        "ece_before": cal.get("ece_uncalibrated", cal["ece"]),
        "ece_after": cal["ece"],
        "brier_before": cal.get("brier_uncalibrated", cal["brier"]),
        "brier_after": cal["brier"],
        "accuracy": plain["accuracy"],
        "accuracy_tta": tta["accuracy"],
        "ece_tta": tta["calibration"]["ece"],
        "tta_temperature": tta["calibration"].get("tta_temperature", float("nan")),
        "views": tta["tta"]["views"],
        "eval_s": plain_s,
        "eval_tta_s": tta_s,
    }


def fashion_pair(work: Path, classes: list[str], train: int, test: int) -> Path:
    out = work / "-".join(classes)
    command = [
        sys.executable, str(ROOT / "scripts" / "make_fashion_set.py"), "--out", str(out),
        "--classes", *classes, "--train-per-class", str(train), "--test-per-class", str(test),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return out


def _mean(rows: list[dict], key: str) -> float:
    return statistics.fmean(float(r[key]) for r in rows)


def table(results: dict[str, list[dict]]) -> str:
    lines = [
        "| data | test images | T (mean) | ECE before | ECE after | ECE noise | Brier before | "
        "Brier after | accuracy | accuracy --tta | ECE --tta | views | eval s | --tta s | cost |",
        "|---|" + "---|" * 14,
    ]
    for name, rows in results.items():
        lines.append(
            f"| {name} | {rows[0]['test_images']} | {_mean(rows, 'temperature'):.3f} | "
            f"{_mean(rows, 'ece_before'):.4f} | {_mean(rows, 'ece_after'):.4f} | "
            f"{_mean(rows, 'ece_noise'):.4f} | {_mean(rows, 'brier_before'):.4f} | "
            f"{_mean(rows, 'brier_after'):.4f} | {_mean(rows, 'accuracy'):.4f} | "
            f"{_mean(rows, 'accuracy_tta'):.4f} | {_mean(rows, 'tta_temperature'):.3f} | "
            f"{_mean(rows, 'ece_tta'):.4f} | "
            f"{rows[0]['views']} | {_mean(rows, 'eval_s'):.2f} | {_mean(rows, 'eval_tta_s'):.2f} | "
            f"{_mean(rows, 'eval_tta_s') / _mean(rows, 'eval_s'):.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pair", nargs=2, default=["pullover", "coat"])
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=1000, help="at most 1000")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config overrides, e.g. model.dropout=0 for an over-confident model",
    )
    args = parser.parse_args()
    from cnnclf.tf_loader import import_tensorflow, quiet_keras_warnings

    import_tensorflow(False)
    quiet_keras_warnings()
    results: dict[str, list[dict]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-cal-") as folder:
        work = Path(folder)
        demo = fashion_pair(work, ["sneaker", "ankle_boot"], 600, args.test_per_class)
        pair = fashion_pair(work, args.pair, args.train_per_class, args.test_per_class)
        sets = {"demo's classes (sneaker/ankle_boot)": demo, f"fashion {'/'.join(args.pair)}": pair}
        for seed in args.seeds:
            for name, data in sets.items():
                out = work / f"{data.name}-{seed}"
                trained = train(data, out, seed, args.epochs, args.overrides)
                row = {"seed": seed, **measure(out, data / "test_set"), **trained}
                results.setdefault(name, []).append(row)
                print(json.dumps({"data": name, **row}), flush=True)
    print(
        f"\n{len(args.seeds)} seeds, {args.epochs} epochs, overrides {args.overrides}; "
        f"{time.monotonic() - started:.0f} s\n"
    )
    print(table(results))


if __name__ == "__main__":
    main()
