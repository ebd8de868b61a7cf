#!/usr/bin/env python3
"""Does `cnnclf tune` find a better config than configs/recommended.yaml? Measured, bounded.

On a Fashion-MNIST pair (pullover vs coat, the hardest pair; Debian's dataset-fashion-mnist,
written by scripts/make_fashion_set.py), two `cnnclf tune` workers share one SQLite study over
recommended.yaml's tune: defaults, each trial judged on 20% of the training images (never on
the held-out test set). Then best.yaml and recommended.yaml are trained with the same data and
the same epochs (the same compute per model) for each of two seeds, and their accuracy on the
held-out test set is compared; the sweep's own cost is reported beside it.

    python scripts/bench_tune.py --work /tmp/bench_tune   # about 10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CNNCLF = [sys.executable, "-m", "cnnclf.cli"]


def run(command: list[str], **kwargs) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return done.stdout


def held_out_accuracy(config: Path, data: Path, out: Path, seed: int, epochs: int) -> float:
    sets = [
        f"data.train_dir={data / 'training_set'}",
        "data.test_dir=null",  # validation carved out of training: the test set stays unseen
        f"train.seed={seed}",
        f"train.epochs={epochs}",
    ]
    run(
        [
            *CNNCLF,
            "train",
            "--config",
            str(config),
            "--out",
            str(out),
            "--overwrite",
            "--device",
            "cpu",
            *(w for s in sets for w in ("--set", s)),
        ]
    )
    report = json.loads(
        run([*CNNCLF, "evaluate", str(data / "test_set"), "--model", str(out), "--format", "json"])
    )
    return float(report["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_tune"))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--trial-epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=12, help="epochs of each final model")
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=300)
    parser.add_argument("--metric", default="val_accuracy", help="tune.metric of the sweep")
    args = parser.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    data = args.work / "data"
    run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_fashion_set.py"),
            "--out",
            str(data),
            "--classes",
            "pullover",
            "coat",
            "--format",
            "jpg",
            "--min-size",
            "40",
            "--max-size",
            "96",
            "--rgb",
            "--train-per-class",
            str(args.train_per_class),
            "--test-per-class",
            str(args.test_per_class),
        ]
    )
    recommended = ROOT / "configs" / "recommended.yaml"
    sweep = args.work / "sweep"
    sets = [
        f"data.train_dir={data / 'training_set'}",
        "data.test_dir=null",
        f"train.epochs={args.trial_epochs}",
        f"tune.metric={args.metric}",
    ]
    command = [
        *CNNCLF,
        "tune",
        "--config",
        str(recommended),
        "--trials",
        str(args.trials),
        "--out",
        str(sweep),
        "--study",
        "bench",
        "--device",
        "cpu",
        "--format",
        "json",
        *(w for s in sets for w in ("--set", s)),
    ]
    started = time.monotonic()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    workers = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=1800) for w in workers]
    if any(w.returncode for w in workers):
        raise SystemExit("a tune worker failed:\n" + "\n".join(err[-2000:] for _, err in outputs))
    sweep_seconds = time.monotonic() - started
    report = json.loads(outputs[0][0])
    states = [row["state"] for row in report["trials"]]
    trained_epochs = sum(
        args.trial_epochs if row["state"] == "COMPLETE" else 0 for row in report["trials"]
    )
    results: dict[str, list[float]] = {"recommended.yaml": [], "best.yaml": []}
    for seed in (1, 2):
        for name, config in (("recommended.yaml", recommended), ("best.yaml", sweep / "best.yaml")):
            out = args.work / "final" / f"{name}-{seed}"
            results[name].append(held_out_accuracy(config, data, out, seed, args.epochs))
    print(
        f"sweep: {args.trials} trials of {args.trial_epochs} epochs on 2 workers, "
        f"{sweep_seconds:.0f} s; states {dict((s, states.count(s)) for s in set(states))}; "
        f"complete trials trained {trained_epochs} epochs (pruned ones fewer)"
    )
    print(f"best trial: {report['best']}")
    for name, values in results.items():
        print(
            f"{name}: held-out accuracy {statistics.mean(values):.4f} "
            f"(seeds 1, 2: {', '.join(f'{v:.4f}' for v in values)}), {args.epochs} epochs each"
        )


if __name__ == "__main__":
    main()
