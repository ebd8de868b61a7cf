"""Where runs go: naming new run folders under `runs/` and finding the newest bundle.

Run folders are named `<config stem>-<YYYYmmdd-HHMMSS>`, with `-2`, `-3`... when that name is
taken, so a run never overwrites an earlier one. A name is reserved by creating its (empty) folder,
which only one process can do: two runs started in the same second get different names. The newest *complete* bundle is the one whose
`bundle.json` (written last, just before the atomic rename) is the most recent.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from cnnclf.bundle import MANIFEST_FILE, is_bundle
from cnnclf.errors import BundleError

RUNS_DIR = Path("runs")


def new_run_dir(config_path: str | Path | None, runs_dir: Path = RUNS_DIR) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(config_path).stem) if config_path else "run"
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    runs_dir.mkdir(parents=True, exist_ok=True)
    candidate, n = runs_dir / base, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = runs_dir / f"{base}-{n}"


def newest_bundle(runs_dir: Path = RUNS_DIR) -> Path:
    if not runs_dir.is_dir():
        raise BundleError(
            f"no --model given and no {runs_dir}/ folder here: train first "
            "(cnnclf train --config ...) or pass --model BUNDLE_DIR"
        )
    bundles = [
        p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and is_bundle(p)
    ]
    if not bundles:
        raise BundleError(
            f"no --model given and no complete bundle under {runs_dir}/: train "
            "first or pass --model BUNDLE_DIR"
        )
    return max(bundles, key=lambda p: ((p / MANIFEST_FILE).stat().st_mtime, p.name))
