"""Stratified K folds of the training rows, each written as a pair of CSV label files.

Why label files: a fold is then an ordinary training run (`data.train_dir` and `data.test_dir`
point at the fold's CSVs), so it is crash-safe and resumable exactly like `cnnclf train`, and
nothing in training needs to know that a review exists.

Multi-label rows (several labels, or none, per image) are folded by iterative stratification
(data/stratify.py), so a rare label is spread over the folds too, and their fold files are
one-hot CSVs (`path,<class>,<class>...`, read with data.multi_label: true): a column per class
keeps every class. Their class names cannot hold spaces: issues, the page and decisions.csv
write a label set space-separated, so `pleural effusion` would read back as two classes.

Example:
    fold_of = stratified_folds([0, 0, 1, 1, 1], folds=2, seed=7)   # [1, 0, 0, 1, 0]
    fold_of = multi_label_folds([(0,), (0, 1), (1,), ()], 2, folds=2, seed=7)
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from cnnclf.data.label_files import PATH_COLUMNS
from cnnclf.data.stratify import iterative_hold_out
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


def multi_label_folds(
    label_sets: list[tuple[int, ...]], n_classes: int, folds: int, seed: int
) -> list[int]:
    """The fold each multi-label row is held out in; every label is spread evenly.

    Fold k is held out of the rows the folds before it left, by iterative stratification with
    the share 1 / (folds - k): each cut keeps every label's proportion, so the folds do too.

    Args:
        label_sets: class indices per row (possibly none).
        n_classes: the number of classes.
        folds: K, at least 2.
        seed: the same seed always gives the same folds.

    Returns:
        One fold index per row.
    """
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    fold_of = [folds - 1] * len(label_sets)
    remaining = list(range(len(label_sets)))
    for k in range(folds - 1):
        held = iterative_hold_out(
            [label_sets[i] for i in remaining], n_classes, 1 / (folds - k), seed + k
        )
        for row, out in zip(remaining, held):
            if out:
                fold_of[row] = k
        remaining = [row for row, out in zip(remaining, held) if not out]
    return fold_of


def check_fold_classes(
    label_sets: list[tuple[int, ...]], fold_of: list[int], class_names: list[str]
) -> None:
    """Refuses folds where some fold model would train without a class (its label file would
    then have fewer classes than the review)."""
    for k in sorted(set(fold_of)):
        carried = {c for labels, f in zip(label_sets, fold_of) if f != k for c in labels}
        for c, name in enumerate(class_names):
            if c not in carried:
                raise DataError(
                    f"data.train_dir: class {name} is on no image outside fold {k + 1}, so that "
                    "fold's model cannot learn it; lower --folds or add images of it"
                )


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
    rows = [[p, c] for p, c in zip(paths, labels)]
    return _write_pair(folder, fold, ["path", "label"], rows, fold_of)


def write_multi_label_fold_files(
    folder: Path,
    fold: int,
    paths: list[str],
    label_sets: list[tuple[int, ...]],
    class_names: list[str],
    fold_of: list[int],
) -> tuple[Path, Path]:
    """write_fold_files for multi-label rows: one-hot CSVs, a 0/1 column per class."""
    check_column_names(class_names)
    rows = [
        [p, *("1" if c in labels else "0" for c in range(len(class_names)))]
        for p, labels in zip(paths, label_sets)
    ]
    return _write_pair(folder, fold, ["path", *class_names], rows, fold_of)


def check_column_names(class_names: list[str], file: str | None = None) -> None:
    """Refuses multi-label class names that a one-hot header, or a space-separated label set
    (issues, the page, decisions.csv), would read back as something else.

    Args:
        class_names: the review's classes.
        file: the label file they came from, named in the message (None: "the label file").
    """
    reserved = {PATH_COLUMNS[0], "label", "labels"}  # the path column is always `path`
    seen: set[str] = set()
    for name in class_names:
        lower = name.lower()
        if name != name.strip() or not name or lower in reserved or lower in seen:
            raise DataError(
                f"data.train_dir: class {name!r} cannot be a column of the review's fold label "
                "files (path, label, labels, a repeat, or padded with spaces); rename it"
            )
        if any(c.isspace() for c in name):
            raise DataError(
                f"data.train_dir: class {name!r} has a space; a multi-label review writes label "
                f"sets space-separated: rename it (e.g. {'_'.join(name.split())}) in "
                f"{_where_named(file)}"
            )
        seen.add(lower)


def _where_named(file: str | None) -> str:
    """Where a class name is written: a CSV's header (one-hot), else anywhere in the file (a
    JSON Lines `labels` list)."""
    if file is None:
        return "the label file"
    return f"{file}'s header" if file.lower().endswith(".csv") else file


def _write_pair(
    folder: Path, fold: int, header: list[str], rows: list[list[str]], fold_of: list[int]
) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, keep in (("train", False), ("heldout", True)):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(row for row, f in zip(rows, fold_of) if (f == fold) == keep)
        path = folder / f"fold-{fold + 1}-{name}.csv"
        data = buffer.getvalue().encode("utf-8")
        if not path.exists() or path.read_bytes() != data:
            write_atomically(path, lambda f, data=data: f.write(data))
        files.append(path)
    return files[0], files[1]
