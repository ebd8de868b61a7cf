#!/usr/bin/env python3
"""`train.learning_rate: auto` and `cnnclf init`'s config, side by side in one run (issue 28).

On the demo set (data/demo: ankle boot vs sneaker, 600 + 150 a class, 28x28 grayscale), for
each seed and with the same epoch budget:
  - configs/recommended.yaml at its default learning rate, at a 5-point grid (1e-4 .. 1e-2), and
    at learning_rate: auto (the range test before training; its cost is the wall-time
    difference against the default run, and the finder's own seconds from its log line);
  - the config `cnnclf init data/demo` writes, against configs/recommended.yaml.
Held-out accuracy is the validation accuracy of the saved weights on data/demo/test_set (the
set each run validates on; init's config keeps the best epoch by val_loss, so its figure is a
little optimistic). Each run is a fresh `python -m cnnclf train` process; runs alternate.

With --rules, the rules themselves are compared instead: per seed the range test runs once
(`cnnclf lr-find`, the same test `learning_rate: auto` runs), and the same config is trained at
the rate each rule reads off that one curve (steepest descent capped at minimum/10, minimum/10,
fastai's valley) beside the 5-point grid; --data picks the set (a folder `--data` takes).
--more-steps N also reads minimum/10 off a test of N steps (beside the default's).

Examples:
    python scripts/bench_lr_init.py --seeds 1 2 --epochs 3
    python scripts/bench_lr_init.py --rules --seeds 1 2 3 --epochs 3
    python scripts/bench_lr_init.py --rules --seeds 1 2 3 --data /tmp/coats
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
GRID = [1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2]


def train(
    config: Path, out: Path, seed: int, epochs: int, *overrides: str, data: Path = DEMO
) -> dict:
    """One training run: held-out accuracy, wall seconds, the finder's line if any."""
    command = [
        sys.executable, "-m", "cnnclf", "train", "--config", str(config), "--out", str(out),
        "--data", str(data), "--device", "cpu", "--set", f"train.seed={seed}",
    ]  # fmt: skip
    if epochs:  # 0: the config's own epochs (and its early stopping, if any)
        command += ["--set", f"train.epochs={epochs}"]
    for override in overrides:
        command += ["--set", override]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    record = json.loads((out / "bundle.json").read_text())
    pattern = r"learning_rate: auto -> (\S+) \(lr-find: (\d+) steps, ([\d.]+) s\)"
    found = re.search(pattern, done.stderr)
    return {
        "accuracy": record["final_metrics"]["val_accuracy"],
        "seconds": seconds,
        "rate": float(found.group(1)) if found else None,
        "finder_s": float(found.group(3)) if found else None,
    }


RULES = ("steepest", "minimum/10", "valley")


def curve_rates(config: Path, data: Path, seed: int, out: Path, steps: int | None = None) -> dict:
    """One range test (as `learning_rate: auto` runs it): each rule's rate off its curve."""
    command = [
        sys.executable, "-m", "cnnclf", "lr-find", "--config", str(config), "--data", str(data),
        "--set", f"train.seed={seed}", "--out", str(out), "--format", "json", "--device", "cpu",
    ]  # fmt: skip
    if steps is not None:  # None: the finder's own default, as learning_rate: auto runs it
        command += ["--steps", str(steps)]
    subprocess.run(command, capture_output=True, text=True, timeout=900, check=True)
    found = json.loads((out / "lr_find.json").read_text())
    return {
        "steepest": min(found["steepest"], found["minimum"] / 10),
        "minimum/10": found["minimum"] / 10,
        "valley": found["valley"],
    }


def compare_rules(args: argparse.Namespace) -> None:
    """Each rule's rate, read off one curve per seed, against the grid: the same training."""
    recommended = ROOT / "configs" / "recommended.yaml"
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-lr-rules-") as work:
        work_dir = Path(work)
        for seed in args.seeds:
            found = curve_rates(recommended, args.data, seed, work_dir / f"curve-{seed}")
            print(f"seed {seed} rates {json.dumps(found)}", flush=True)
            runs = [(f"grid {rate:g}", rate) for rate in GRID]
            runs += [(rule, found[rule]) for rule in args.rule_names]
            for steps in args.more_steps:  # the same rule off a longer (less noisy) test
                longer = curve_rates(
                    recommended, args.data, seed, work_dir / f"curve-{seed}-{steps}", steps
                )
                print(f"seed {seed} rates at {steps} steps {json.dumps(longer)}", flush=True)
                runs.append((f"minimum/10, {steps} steps", longer["minimum/10"]))
            for name, rate in runs:
                out = work_dir / f"{name.replace(' ', '_').replace('/', '_')}-{seed}"
                result = train(
                    recommended, out, seed, args.epochs, f"train.learning_rate={rate}",
                    data=args.data,
                )  # fmt: skip
                result["rate"] = rate
                results.setdefault(name, []).append(result)
                print(f"seed {seed} {name:<14} {json.dumps(result)}", flush=True)
    best = max(
        (name for name in results if name.startswith("grid")),
        key=lambda name: statistics.mean(r["accuracy"] for r in results[name]),
    )
    print(f"\n{'run':<15} {'accuracy (mean)':>16} {'per seed':>22} {'vs grid best':>13}  rates")
    for name, rows in results.items():
        accuracy = [r["accuracy"] for r in rows]
        # per seed, against the grid's best point on the same seed: the seed's noise cancels
        gap = statistics.mean(
            a - b["accuracy"] for a, b in zip(accuracy, results[best], strict=True)
        )
        rates = ", ".join(f"{r['rate']:.3g}" for r in rows)
        print(
            f"{name:<15} {statistics.mean(accuracy):>16.4f} "
            f"{' '.join(f'{a:.4f}' for a in accuracy):>22} {gap:>+13.4f}  {rates}"
        )


def compare_shipped(args: argparse.Namespace) -> None:
    """`cnnclf init`'s config against two shipped configs, each as it is (its own epochs,
    early stopping and image size): what a user gets from each without tuning anything."""
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-init-") as work:
        work_dir = Path(work)
        init_config = work_dir / "init.yaml"
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "cnnclf", "init", str(args.data), "--out", str(init_config)],
            check=True, capture_output=True,
        )  # fmt: skip
        print(f"init wrote its config in {time.monotonic() - started:.2f} s", flush=True)
        runs = [
            ("init config", init_config),
            ("recommended.yaml", ROOT / "configs" / "recommended.yaml"),
            ("cats_dogs.yaml", ROOT / "configs" / "cats_dogs.yaml"),
        ]
        for seed in args.seeds:
            for name, config in runs:
                out = work_dir / f"{name.replace(' ', '_')}-{seed}"
                result = train(config, out, seed, 0, data=args.data)
                results.setdefault(name, []).append(result)
                print(f"seed {seed} {name:<17} {json.dumps(result)}", flush=True)
    print(f"\n{'config':<17} {'accuracy (mean)':>16} {'per seed':>22} {'wall s (mean)':>14}")
    for name, rows in results.items():
        accuracy = [r["accuracy"] for r in rows]
        print(
            f"{name:<17} {statistics.mean(accuracy):>16.4f} "
            f"{' '.join(f'{a:.4f}' for a in accuracy):>22} "
            f"{statistics.mean(r['seconds'] for r in rows):>14.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rules", action="store_true", help="compare the suggestion rules")
    parser.add_argument("--data", type=Path, default=DEMO, help="with --rules/--shipped: the data")
    parser.add_argument(
        "--shipped", action="store_true",
        help="init's config against cats_dogs.yaml and recommended.yaml, each at its own epochs",
    )  # fmt: skip
    parser.add_argument(
        "--rule-names", nargs="+", default=list(RULES), choices=RULES,
        help="with --rules: which rules to train at",
    )  # fmt: skip
    parser.add_argument(
        "--more-steps", type=int, nargs="*", default=[],
        help="with --rules: also train at minimum/10 read off a test of this many steps",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("CNNCLF_OFFLINE", "1")  # never download in a benchmark
    if args.rules:
        compare_rules(args)
        return
    if args.shipped:
        compare_shipped(args)
        return
    recommended = ROOT / "configs" / "recommended.yaml"
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-lr-init-") as work:
        work_dir = Path(work)
        init_config = work_dir / "init.yaml"
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "cnnclf", "init", str(DEMO), "--out", str(init_config)],
            check=True, capture_output=True,
        )  # fmt: skip
        init_seconds = time.monotonic() - started
        runs = [("default 0.001", recommended, ())]
        runs += [(f"grid {rate:g}", recommended, (f"train.learning_rate={rate}",)) for rate in GRID]
        runs += [("auto", recommended, ("train.learning_rate=auto",))]
        runs += [("init config", init_config, ())]
        for seed in args.seeds:
            for name, config, overrides in runs:
                if name == "grid 0.001":
                    continue  # the default run is this grid point
                out = work_dir / f"{name.replace(' ', '_')}-{seed}"
                result = train(config, out, seed, args.epochs, *overrides)
                results.setdefault(name, []).append(result)
                print(f"seed {seed} {name:<14} {json.dumps(result)}", flush=True)
    results["grid 0.001"] = results["default 0.001"]
    print(f"\ninit wrote its config in {init_seconds:.2f} s (process start included)")
    print(f"{'run':<15} {'accuracy (mean)':>16} {'per seed':>22} {'wall s (mean)':>14}  extra")
    for name, rows in results.items():
        accuracy = [r["accuracy"] for r in rows]
        extra = ""
        if rows[0]["rate"] is not None:
            rates = ", ".join(f"{r['rate']:.3g}" for r in rows)
            extra = f"found {rates}; finder {statistics.mean(r['finder_s'] for r in rows):.1f} s"
        print(
            f"{name:<15} {statistics.mean(accuracy):>16.4f} "
            f"{' '.join(f'{a:.4f}' for a in accuracy):>22} "
            f"{statistics.mean(r['seconds'] for r in rows):>14.1f}  {extra}"
        )


if __name__ == "__main__":
    main()
