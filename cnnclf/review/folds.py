"""Stratified K folds of the training rows, each written as a pair of CSV label files.

Why label files: a fold is then an ordinary training run (`data.train_dir` and `data.test_dir`
point at the fold's CSVs), so it is crash-safe and resumable exactly like `cnnclf train`, and
nothing in training needs to know that a review exists.

Example:
    fold_of = stratified_folds([0, 0, 1, 1, 1], folds=2, seed=7)   # [1, 0, 0, 1, 0]
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from cnnclf.errors import ConfigError, DataError
from cnnclf.training.filesystem import write_atomically


def stratified_folds(labels: list[int], folds: int, seed: int) -> list[int]:
    """The fold (0 .. folds-1) each row is held out in; every class is spread evenly.

    Args:
        labels: class index per row.
        folds: K, at least 2.
        seed: the same seed always gives the same folds (a resumed review must).

    Returns:
        One fold index per row.
    """
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    rng = random.Random(seed)
    fold_of = [0] * len(labels)
    start = 0  # classes continue where the last one stopped, so fold sizes stay balanced
    for label in sorted(set(labels)):
        rows = [i for i, value in enumerate(labels) if value == label]
        rng.shuffle(rows)
        for position, row in enumerate(rows):
            fold_of[row] = (start + position) % folds
        start = (start + len(rows)) % folds
    return fold_of


def check_fold_counts(counts: dict[str, int], folds: int) -> None:
    """Refuses a class too small for every fold to hold one of its images out and train on
    the rest."""
    for name, n in counts.items():
        if n < folds:
            raise DataError(
                f"data.train_dir: class {name} has {n} image(s), fewer than --folds {folds}; "
                "lower --folds or add images"
            )


def write_fold_files(
    folder: Path, fold: int, paths: list[str], labels: list[str], fold_of: list[int]
) -> tuple[Path, Path]:
    """Writes fold-K-train.csv (the rows outside fold K) and fold-K-heldout.csv (fold K).

    Each file is written by one rename, so a kill never leaves half a label file for the
    resumed run to train on. Returns (train file, held-out file).
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, keep in (("train", False), ("heldout", True)):
        rows = [(p, c) for p, c, f in zip(paths, labels, fold_of) if (f == fold) == keep]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(rows)
        path = folder / f"fold-{fold + 1}-{name}.csv"
        data = buffer.getvalue().encode("utf-8")
        if not path.exists() or path.read_bytes() != data:
            write_atomically(path, lambda f, data=data: f.write(data))
        files.append(path)
    return files[0], files[1]
