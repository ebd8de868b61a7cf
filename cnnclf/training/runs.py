"""Where runs go: naming new run folders under `runs/`, checking the folder a run publishes
to, and finding the newest bundle.

Run folders are named `<config stem>-<YYYYmmdd-HHMMSS>`, with `-2`, `-3`... when that name is
taken, so a run never overwrites an earlier one. A name is reserved by creating its (empty)
folder, which only one process can do: two runs started in the same second get different names.
The newest *complete* bundle is the one whose `bundle.json` (written last, just before the
atomic rename) is the most recent.
"""

from __future__ import annotations

import os
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


def usable_destination(destination: Path, label: str) -> Path:
    """The folder a bundle can be published at, for what the user passed as `destination`.

    A link to a folder means its target (the bundle goes where the link points). A mount point
    and the current folder (or one holding it) are refused up front: publishing renames a
    folder into place, which neither allows, and finding that out after hours of training is
    too late.
    """
    destination = Path(destination)
    if destination.is_symlink() and destination.is_dir():
        destination = Path(os.path.realpath(destination))
    absolute = Path(os.path.abspath(destination))
    if absolute.exists() and os.path.ismount(absolute):
        raise BundleError(
            f"{label}: is a mount point, which cannot be replaced by a finished "
            f"bundle; name a folder inside it, e.g. {destination / 'model'}"
        )
    if Path.cwd().resolve().is_relative_to(absolute.resolve()):
        raise BundleError(
            f"{label}: is the current folder (or holds it); name a new folder "
            f"for the bundle, e.g. {destination / 'model'}"
        )
    return absolute if str(destination) in (".", "..") else destination


def check_destination(destination: Path, overwrite: bool) -> None:
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise BundleError(f"--out {destination}: exists and is not a folder")
    if destination.is_dir() and any(destination.iterdir()) and not overwrite:
        raise BundleError(
            f"--out {destination}: folder exists and is not empty; choose another "
            "folder or pass --overwrite to replace it"
        )
