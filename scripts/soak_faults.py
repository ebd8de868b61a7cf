"""Soak test of the run life cycle: kill -9 / Ctrl-C `cnnclf train` at many instants, then recover.

Each trial starts a training run in a subprocess, sends SIGKILL or SIGINT at a random instant of
a run's length (measured first on an undisturbed run), or at a named file-system step
(CNNCLF_FAULT, with --points), and then checks the invariant the way a user would, through the
command line only:

    the bundle at --out is complete and loads, or `--resume` finishes it, or (when no epoch was
    saved) the same command run again finishes it; and the finished bundle has every epoch.

A trial "survives" when one of those works with no traceback and no crash on the way. Only the
CLI is used, so the same script measures an older checkout (PYTHONPATH=old/checkout) for a
before/after figure.

    python scripts/soak_faults.py --trials 40 --out /tmp/soak
    python scripts/soak_faults.py --trials 0 --points --out /tmp/soak-points
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_tree, write_config

POINTS = [
    "run.started",
    "checkpoint.data_written",
    "checkpoint.data_renamed",
    "checkpoint.best_renamed",
    "checkpoint.progress_written",
    "checkpoint.committed",
    "checkpoint.pruned",
    "bundle.model_written",
    "bundle.written",
    "publish.renamed",
    "checkpoint.data_written@3",
    "checkpoint.committed@5",
]


def cli(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnnclf.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def start(config: Path, out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cnnclf.cli", "train", "--config", str(config), "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def complete(out: Path, epochs: int) -> bool:
    try:
        history = json.loads((out / "history.json").read_text())
        json.loads((out / "bundle.json").read_text())
    except (OSError, ValueError):
        return False
    return history.get("epoch") == list(range(1, epochs + 1)) and (out / "model.keras").is_file()


def loads(out: Path, env: dict) -> bool:
    images = sorted(p for p in out.parent.glob("data/test_set/*/*") if p.is_file())[:1]
    return cli("predict", "--model", out, *images, env=env).returncode == 0


def recover(config: Path, out: Path, epochs: int, env: dict) -> str:
    """How the run was brought to a finished bundle, or 'LOST: ...'."""
    if complete(out, epochs) and loads(out, env):
        return "published"
    resumed = cli("train", "--config", config, "--out", out, "--resume", env=env)
    if resumed.returncode == 0 and complete(out, epochs):
        return "resumed"
    again = cli("train", "--config", config, "--out", out, env=env)
    if again.returncode == 0 and complete(out, epochs):
        return "re-run"
    last = (again.stderr.strip().splitlines() or ["?"])[-1]
    first = (resumed.stderr.strip().splitlines() or ["?"])[-1]
    return f"LOST: --resume said {first!r}; re-run said {last!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="random-instant trials")
    parser.add_argument("--points", action="store_true", help="also kill at every named step")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (emptied)")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    tree = make_tree(args.out / "data", n_train=8, n_test=4)
    config = write_config(
        args.out / "c.yaml", tree, train={"epochs": args.epochs, "seed": 3, "keep_best": "val_loss"}
    )
    env = {k: v for k, v in os.environ.items() if k != "CNNCLF_FAULT"}

    clean = start(config, args.out / "clean", env)
    began = time.monotonic()
    clean.communicate()
    length = time.monotonic() - began
    print(f"undisturbed run: {length:.1f} s (exit {clean.returncode})", flush=True)

    rng = random.Random(args.seed)
    trials = [("SIGKILL" if i % 2 == 0 else "SIGINT", None) for i in range(args.trials)]
    if args.points:
        trials += [("SIGKILL", point) for point in POINTS]
        trials += [("SIGINT", point) for point in POINTS]
    tally: dict[str, list[int]] = {}
    for i, (sig, point) in enumerate(trials):
        out = args.out / f"run{i:03d}"
        trial_env = dict(env)
        if point:
            trial_env["CNNCLF_FAULT"] = f"{point}={'kill' if sig == 'SIGKILL' else 'interrupt'}"
        process = start(config, out, trial_env)
        when = None
        if point is None:
            # From 1 s on: before that the interpreter is still importing its own modules,
            # where a Ctrl-C is Python's business, not the run's.
            when = rng.uniform(min(1.0, length / 2), length)
            time.sleep(when)
            process.send_signal(getattr(signal, sig))
        _, stderr = process.communicate()
        crashed = (
            "Traceback" in stderr
            or "free()" in stderr
            or process.returncode not in (0, 130, -signal.SIGKILL, -signal.SIGINT)
        )
        how = recover(config, out, args.epochs, env)
        ok = not crashed and not how.startswith("LOST")
        kind = f"{sig}{' at ' + point if point else ''}"
        tally.setdefault(sig, [0, 0])
        tally[sig][0] += 1
        tally[sig][1] += ok
        shown = f"{when:.2f} s" if when is not None else point
        detail = (
            ""
            if not crashed
            else f" (exit {process.returncode}: {(stderr.strip().splitlines() or ['?'])[-1][:120]})"
        )
        print(f"{i:3d} {kind:<40} {shown:<28} {'ok  ' if ok else 'FAIL'} {how}{detail}", flush=True)
    for sig, (tried, survived) in tally.items():
        print(f"{sig}: {survived} of {tried} survived")
    total = sum(t for t, _ in tally.values())
    survived = sum(s for _, s in tally.values())
    print(f"all: {survived} of {total} survived")
    return 0 if survived == total else 1


if __name__ == "__main__":
    sys.exit(main())
