#!/usr/bin/env python3
"""Held-out accuracy of cnnclf against the seed tutorial's own pipeline, same data and epochs.

cnnclf runs exactly as a user would: `cnnclf train --config configs/cats_dogs.yaml --set ...`
then `cnnclf predict --format json <test_set>`, and accuracy is read off the JSON. The tutorial
runs its Keras 2 code through `tf_keras` (ImageDataGenerator + flow_from_directory + fit), with
the same model, augmentation, image size, batch size and epochs. Each pipeline and seed runs in
its own process; accuracy is compared as a mean over seeds, since one seed alone moves this
model's accuracy by several points.

Needs the baseline's packages, which cnnclf itself does not use (tf-keras pins the full
`tensorflow` wheel, hence --no-deps next to tensorflow-cpu):
    pip install --no-deps "tf-keras>=2.21,<2.22" && pip install scipy

Example:
    python scripts/make_fashion_set.py --out /tmp/coats --classes pullover coat --rgb \
        --format jpg --min-size 40 --max-size 160 --train-per-class 1000 --test-per-class 300
    python scripts/compare_tutorial.py /tmp/coats --epochs 5 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TUTORIAL = r"""
import time
started = time.monotonic()  # like cnnclf's figure: imports, model build, fit, save
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tf_keras as keras
from tf_keras.preprocessing.image import ImageDataGenerator

data, epochs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
keras.utils.set_random_seed(seed)
classes = sorted(os.listdir(os.path.join(data, "training_set")))
binary = len(classes) == 2
mode = "binary" if binary else "categorical"
classifier = keras.Sequential([
    keras.layers.Conv2D(32, (3, 3), input_shape=(64, 64, 3), activation="relu"),
    keras.layers.MaxPooling2D(pool_size=(2, 2)),
    keras.layers.Flatten(),
    keras.layers.Dense(128, activation="relu"),
    keras.layers.Dense(1, activation="sigmoid") if binary else
    keras.layers.Dense(len(classes), activation="softmax"),
])
classifier.compile(optimizer="adam", loss="binary_crossentropy" if binary else
                   "categorical_crossentropy", metrics=["accuracy"])
train_datagen = ImageDataGenerator(rescale=1./255, shear_range=0.2, zoom_range=0.2,
                                   horizontal_flip=True)
test_datagen = ImageDataGenerator(rescale=1./255)
training_set = train_datagen.flow_from_directory(
    os.path.join(data, "training_set"), target_size=(64, 64), batch_size=32, class_mode=mode,
    seed=seed)
test_set = test_datagen.flow_from_directory(
    os.path.join(data, "test_set"), target_size=(64, 64), batch_size=32, class_mode=mode,
    shuffle=False)
classifier.fit(training_set, epochs=epochs, validation_data=test_set, verbose=0)
import tempfile
classifier.save(os.path.join(tempfile.mkdtemp(), "model.keras"))
train_seconds = time.monotonic() - started
probs = classifier.predict(test_set, verbose=0)
predicted = (probs[:, 0] >= 0.5).astype(int) if binary else probs.argmax(axis=1)
accuracy = float((predicted == test_set.classes).mean())
print(json.dumps({"accuracy": accuracy, "train_seconds": train_seconds,
                  "n_test": int(len(test_set.classes))}))
"""


def run_cnnclf(
    data: Path, epochs: int, seed: int, workdir: Path, overrides: list[str] = ()
) -> dict:
    bundle = workdir / f"cnnclf-seed{seed}"
    cli = [sys.executable, "-m", "cnnclf.cli"]
    started = time.monotonic()  # process start to saved bundle, as for the tutorial
    subprocess.run(
        cli
        + [
            "train",
            "--config",
            str(ROOT / "configs" / "cats_dogs.yaml"),
            "--set",
            f"data.train_dir={data / 'training_set'}",
            "--set",
            f"data.test_dir={data / 'test_set'}",
            "--set",
            f"train.epochs={epochs}",
            "--set",
            f"train.seed={seed}",
            "--out",
            str(bundle),
        ]
        + [arg for o in overrides for arg in ("--set", o)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    train_seconds = time.monotonic() - started
    out = subprocess.run(
        cli + ["predict", "--model", str(bundle), "--format", "json", str(data / "test_set")],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = json.loads(out.stdout)
    correct = sum(Path(r["path"]).parent.name == r["label"] for r in rows)
    return {"accuracy": correct / len(rows), "train_seconds": train_seconds, "n_test": len(rows)}


def run_tutorial(data: Path, epochs: int, seed: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", TUTORIAL, str(data), str(epochs), str(seed)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with training_set/ and test_set/")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra cnnclf config override (repeatable)",
    )
    parser.add_argument(
        "--skip-tutorial",
        action="store_true",
        help="run cnnclf only (e.g. to compare two cnnclf settings)",
    )
    args = parser.parse_args()
    data = args.data.resolve()
    results = {"cnnclf": [], "tutorial": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            # Interleaved, so machine noise hits both pipelines alike.
            results["cnnclf"].append(run_cnnclf(data, args.epochs, seed, Path(tmp), args.overrides))
            if args.skip_tutorial:
                print(f"seed {seed}: cnnclf {results['cnnclf'][-1]['accuracy']:.4f}", flush=True)
                continue
            results["tutorial"].append(run_tutorial(data, args.epochs, seed))
            print(
                f"seed {seed}: cnnclf {results['cnnclf'][-1]['accuracy']:.4f} "
                f"({results['cnnclf'][-1]['train_seconds']:.1f} s), tutorial "
                f"{results['tutorial'][-1]['accuracy']:.4f} "
                f"({results['tutorial'][-1]['train_seconds']:.1f} s)",
                flush=True,
            )
    summary = {}
    if args.skip_tutorial:
        accs = [r["accuracy"] for r in results["cnnclf"]]
        print(
            f"cnnclf {args.overrides}: mean accuracy {statistics.mean(accs):.4f} over "
            f"seeds {args.seeds}"
        )
        return
    for name, runs in results.items():
        accs = [r["accuracy"] for r in runs]
        summary[name] = {
            "mean_accuracy": statistics.mean(accs),
            "stdev_accuracy": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "median_train_seconds": statistics.median(r["train_seconds"] for r in runs),
            "runs": runs,
        }
    delta = summary["cnnclf"]["mean_accuracy"] - summary["tutorial"]["mean_accuracy"]
    print(
        f"\n{data.name}: {args.epochs} epochs, seeds {args.seeds}, "
        f"{results['cnnclf'][0]['n_test']} test images"
    )
    print(f"{'pipeline':<10} {'mean acc':>9} {'stdev':>7} {'train s (median)':>17}")
    for name, s in summary.items():
        print(
            f"{name:<10} {s['mean_accuracy']:>9.4f} {s['stdev_accuracy']:>7.4f} "
            f"{s['median_train_seconds']:>17.1f}"
        )
    ratio = summary["tutorial"]["median_train_seconds"] / summary["cnnclf"]["median_train_seconds"]
    print(
        f"cnnclf - tutorial: {delta * 100:+.2f} accuracy points; "
        f"tutorial/cnnclf train time: {ratio:.2f}x"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"epochs": args.epochs, "seeds": args.seeds, "summary": summary}, indent=2)
        )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
