"""Benchmark `cnnclf review` on Fashion-MNIST with injected label flips (issue 27).

For each flip rate: writes a class-folder set of confusable classes (default pullover/coat,
PER_CLASS images each, 28x28 grayscale) with that share of labels flipped (files moved to
another class's folder), runs `cnnclf review`, and ranks the flips three ways on the same run:

- cnnclf: the review's label issues (issues.json), then the rest by self-confidence;
- cleanlab: `cleanlab.filter.find_label_issues` on the review's out-of-fold probabilities
  (ranked by self-confidence), padded the same way; cleanlab is a bench-only dependency;
- naive: one model trained on all the (noisy) images, sorted by in-sample loss.

Reports precision@k (k = the number of flips, every image ranked: flagged ones first, then
the rest by self-confidence; with k flips it is also recall@k), how many each method flags and
the recall of those flagged, the fold models' mean held-out accuracy, and the time each took.

    python scripts/bench_review.py --rates 0.05                     # ~1 min on 2 cores
    python scripts/bench_review.py --rates 0.02,0.05,0.10 --classes pullover,coat,shirt
    python scripts/bench_review.py --rates 0.05 --retrain-seeds 3   # + accuracy after relabels
    python scripts/bench_review.py --duplicates                     # the pixel check's rule

--retrain-seeds N: relabels the review's top-k label issues to their suggested class, then
trains on the corrected and on the noisy set with N seeds each and reports the mean accuracy on
clean Fashion-MNIST test images of those classes. --duplicates: makes resized, re-encoded,
brightened and shifted copies of Fashion-MNIST images and counts what cnnclf/review/pixels.py
confirms among them and among the distinct same-class pairs.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fashion_set import CLASSES, SOURCE, read_idx

from cnnclf.review.ranking import ranking


def write_noisy_set(root: Path, names: list[str], per_class: int, rate: float, seed: int):
    """Class folders with `rate` of the images moved to a wrong class; returns the flipped paths."""
    images = read_idx(SOURCE / "train-images-idx3-ubyte.gz")
    labels = read_idx(SOURCE / "train-labels-idx1-ubyte.gz")
    rng = random.Random(seed)
    entries = []
    for name in names:
        for i in np.flatnonzero(labels == CLASSES.index(name))[:per_class]:
            entries.append((int(i), name))
    flipped = set(rng.sample(range(len(entries)), round(rate * len(entries))))
    truth = set()
    for n, (i, name) in enumerate(entries):
        given = rng.choice([c for c in names if c != name]) if n in flipped else name
        folder = root / given
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}_{i:05d}.png"
        Image.fromarray(images[i], mode="L").save(path)
        if n in flipped:
            truth.add(str(path.resolve()))
    return truth


def write_config(
    path: Path, train_dir: Path, args, test_dir: Path | None = None, seed: int = 1
) -> Path:
    """The bench's small CNN, or with --config a user's config as it is (its model, image
    size, augmentation and schedule) with only the data, epochs and seed set."""
    if args.config is not None:
        config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
        config["data"].update(
            train_dir=str(train_dir), test_dir=str(test_dir) if test_dir else None
        )
        config["train"].update(epochs=args.epochs, seed=seed)
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path
    config = {
        "data": {
            "train_dir": str(train_dir),
            "test_dir": str(test_dir) if test_dir else None,
            "image_size": [28, 28],
            "color_mode": "grayscale",
            "batch_size": 32,
        },
        "augment": {"rescale": "1/255"},
        "model": {
            "conv_blocks": [
                {"filters": 16, "kernel_size": 3, "pool_size": 2},
                {"filters": 32, "kernel_size": 3, "pool_size": 2},
            ],
            "dense_units": [32],
        },
        "train": {"epochs": args.epochs, "seed": seed},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def scores(order: list[str], flagged: int, truth: set[str]) -> dict:
    k = len(truth)
    hits = sum(p in truth for p in order[:k])
    found = sum(p in truth for p in order[:flagged])
    return {
        "precision_at_k": hits / k if k else float("nan"),
        "flagged": flagged,
        "recall_flagged": found / k if k else float("nan"),
    }


def bench_rate(work: Path, args, rate: float) -> list[dict]:
    folder = work / f"rate-{rate:g}"
    data = folder / "training_set"
    truth = write_noisy_set(data, args.classes, args.per_class, rate, args.seed)
    config = write_config(folder / "review.yaml", data, args)
    started = time.monotonic()
    out = folder / "review"
    command = [sys.executable, "-m", "cnnclf", "review", "--config", str(config)]
    command += ["--folds", str(args.folds), "--repeats", str(args.repeats)]
    command += ["--out", str(out), "--format", "json"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    review_s = time.monotonic() - started
    with open(out / "oof_probabilities.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = sorted(args.classes)
    paths = [r["path"] for r in rows]
    given = np.array([names.index(r["label"]) for r in rows])
    probs = np.array([[float(r[n]) for n in names] for r in rows])
    issues = json.loads((out / "issues.json").read_text())
    mine = [i["path"] for i in issues if i["issue"] == "label"]
    rest = [paths[i] for i in ranking(probs, given) if paths[i] not in set(mine)]
    fold_accuracy = float(
        np.mean(
            [
                json.loads((f / "metrics.json").read_text())["accuracy"]
                for f in sorted((out / "folds").glob("fold-*[0-9]"))
            ]
        )
    )
    results = [
        {
            "method": "cnnclf review",
            "seconds": review_s,
            "fold_accuracy": fold_accuracy,
            "near_duplicates": sum(i["issue"] == "near_duplicate" for i in issues),
            **scores(mine + rest, len(mine), truth),
        }
    ]
    if args.retrain_seeds:
        retrain(folder, data, args, (mine + rest)[: len(truth)], issues, results)

    from cleanlab.filter import find_label_issues

    started = time.monotonic()
    found = list(find_label_issues(given, probs, return_indices_ranked_by="self_confidence"))
    order = found + [
        i for i in np.argsort(probs[np.arange(len(given)), given]) if i not in set(found)
    ]
    results.append(
        {
            "method": "cleanlab find_label_issues",
            "seconds": time.monotonic() - started,
            **scores([paths[i] for i in order], len(found), truth),
        }
    )
    results.append(naive(folder, data, args, truth))
    for r in results:
        r["rate"] = rate
        r["flips"] = len(truth)
    return results


def write_clean_test(root: Path, names: list[str], per_class: int) -> Path:
    """Clean Fashion-MNIST test images of the benchmarked classes (never flipped)."""
    images = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz")
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == CLASSES.index(name))[:per_class]:
            Image.fromarray(images[i], mode="L").save(root / name / f"{name}_{i:05d}.png")
    return root


def retrain(folder: Path, data: Path, args, top: list[str], issues: list, results: list) -> None:
    """Test accuracy of models trained on the noisy set and on it with the review's top-k
    relabels applied (k = the number of flips), `args.retrain_seeds` seeds each."""
    import shutil

    suggested = {i["path"]: i["suggested"] for i in issues if i["issue"] == "label"}
    fixed = folder / "relabelled_set"
    if not fixed.exists():
        shutil.copytree(data, fixed)
        for path in top:
            if path in suggested:  # padding rows past the flagged ones have no suggestion
                source = fixed / Path(path).parent.name / Path(path).name
                shutil.move(source, fixed / suggested[path] / Path(path).name)
    test = write_clean_test(folder / "clean_test", args.classes, 1000)
    for name, train_dir in (("noisy set", data), ("top-k relabelled", fixed)):
        accuracies, started = [], time.monotonic()
        for seed in range(1, args.retrain_seeds + 1):
            config = write_config(folder / f"retrain-{seed}.yaml", train_dir, args, test, seed)
            bundle = folder / f"retrain-{name.split()[0]}-{seed}"
            command = [sys.executable, "-m", "cnnclf", "train", "--config", str(config)]
            command += ["--out", str(bundle), "--overwrite"]
            subprocess.run(
                command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            accuracies.append(json.loads((bundle / "metrics.json").read_text())["accuracy"])
        results.append(
            {
                "method": f"retrain: {name}",
                "seconds": time.monotonic() - started,
                "test_accuracy": float(np.mean(accuracies)),
                "test_accuracies": accuracies,
            }
        )


def duplicates(work: Path, per_class: int = 600) -> None:
    """Counts what the pixel check confirms: made copies, and distinct same-class pairs."""
    from cnnclf.review import pixels

    images = read_idx(SOURCE / "train-images-idx3-ubyte.gz")
    labels = read_idx(SOURCE / "train-labels-idx1-ubyte.gz")
    root = work / "duplicates"
    root.mkdir(parents=True, exist_ok=True)
    paths, classes = [], []
    for name in ("pullover", "coat", "shirt", "tshirt_top", "sneaker"):
        for i in np.flatnonzero(labels == CLASSES.index(name))[:per_class]:
            Image.fromarray(images[i], mode="L").save(root / f"{name}_{i:05d}.png")
            paths.append(str(root / f"{name}_{i:05d}.png"))
            classes.append(name)
    rng = random.Random(0)
    kinds = ("resized 28->40", "JPEG q70", "brightened", "shifted 1 px", "shifted 2 px")
    sources, copies = rng.sample(range(len(paths)), 100), []
    for n, source in enumerate(sources):
        image, kind = np.array(Image.open(paths[source])), n % len(kinds)
        step = 1 if kind == 3 else 2
        moved = np.zeros_like(image)
        moved[step:, step:] = image[:-step, :-step]
        made = {
            0: Image.fromarray(image).resize((40, 40), Image.BICUBIC),
            1: Image.fromarray(image),
            2: Image.fromarray((image * 0.8 + 30).astype(np.uint8)),
        }.get(kind, Image.fromarray(moved))
        copy = root / f"copy{n}.{'jpg' if kind == 1 else 'png'}"
        made.save(copy, quality=70) if kind == 1 else made.save(copy)
        copies.append(str(copy))
    started = time.monotonic()
    thumbs = pixels.thumbnails(paths + copies)
    n = len(paths)
    copy_rows = np.arange(n, n + len(copies))
    ok, _ = pixels.confirmed(thumbs, np.array(sources), copy_rows)
    for k, kind in enumerate(kinds):
        mine = ok[k :: len(kinds)]
        print(f"{kind:<16} copies confirmed: {int(mine.sum())} of {len(mine)}")
    names = np.array(classes)
    found, pairs = set(), 0
    for start in range(0, n, 1024):  # as neighbours.near_duplicates does, without embeddings
        block = pixels.picture_block(thumbs, start, min(start + 1024, n))[:, :n]
        rows, cols = np.nonzero(block >= pixels.PICTURE_CORRELATION - 1e-4)
        rows += start
        keep = (cols > rows) & (names[rows] == names[cols])
        ok, _ = pixels.confirmed(thumbs, rows[keep], cols[keep])
        pairs += int(ok.sum())
        found |= set(rows[keep][ok].tolist()) | set(cols[keep][ok].tolist())
    same = sum(int((names == c).sum()) * (int((names == c).sum()) - 1) // 2 for c in set(classes))
    print(
        f"distinct same-class pairs confirmed: {pairs} of {same} ({len(found)} of {n} images); "
        f"{time.monotonic() - started:.1f} s"
    )


def naive(folder: Path, data: Path, args, truth: set[str]) -> dict:
    """Train once on every image (validating on them too), sort by in-sample loss."""
    from cnnclf.bundle import load_bundle
    from cnnclf.inference.predict import score_paths
    from cnnclf.tf_loader import import_tensorflow

    started = time.monotonic()
    config = write_config(folder / "naive.yaml", data, args, test_dir=data)
    bundle_dir = folder / "naive"
    command = [
        sys.executable,
        "-m",
        "cnnclf",
        "train",
        "--config",
        str(config),
        "--out",
        str(bundle_dir),
        "--overwrite",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import_tensorflow(False)
    bundle = load_bundle(bundle_dir)
    paths = sorted(str(p.resolve()) for p in data.glob("*/*.png"))
    losses = []
    for path, row in score_paths(bundle, paths):
        p = np.asarray(row, float)
        if p.shape[-1] == 1:
            p = np.array([1 - p[0], p[0]])
        losses.append(-np.log(max(p[bundle.class_names.index(Path(path).parent.name)], 1e-12)))
    order = [paths[i] for i in np.argsort(-np.array(losses))]
    return {
        "method": "naive in-sample loss",
        "seconds": time.monotonic() - started,
        **scores(order, 0, truth),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0.02,0.05,0.10")
    parser.add_argument("--classes", default="pullover,coat")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=1, help="review --repeats")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-review"))
    parser.add_argument("--retrain-seeds", type=int, default=0)
    parser.add_argument("--duplicates", action="store_true")
    parser.add_argument(
        "--config",
        type=Path,
        help="train with this config (e.g. configs/recommended.yaml) instead of the small CNN",
    )
    args = parser.parse_args()
    args.classes = args.classes.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.duplicates:
        duplicates(args.work)
        return
    results = []
    for rate in (float(r) for r in args.rates.split(",")):
        results += bench_rate(args.work, args, rate)
    print(
        f"{'rate':>5} {'flips':>5}  {'method':<28} {'P@k':>6} {'flagged':>7} {'recall':>6} {'s':>7}"
    )
    for r in results:
        if "test_accuracy" in r:
            runs = ", ".join(f"{a:.3f}" for a in r["test_accuracies"])
            print(
                f"{r['rate']:>5.2f} {r['flips']:>5}  {r['method']:<28} test accuracy "
                f"{r['test_accuracy']:.3f} ({runs}) {r['seconds']:>7.1f}"
            )
            continue
        print(
            f"{r['rate']:>5.2f} {r['flips']:>5}  {r['method']:<28} {r['precision_at_k']:>6.3f} "
            f"{r['flagged']:>7} {r['recall_flagged']:>6.3f} {r['seconds']:>7.1f}"
            + (
                f"  fold accuracy {r['fold_accuracy']:.3f}, {r['near_duplicates']} near duplicates"
                if "fold_accuracy" in r
                else ""
            )
        )
    (args.work / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
