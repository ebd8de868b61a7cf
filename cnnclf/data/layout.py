"""Finding images and classes on disk, without TensorFlow.

Classes are the sorted sub-folder names of a split's root, as Keras' `flow_from_directory` and
`image_dataset_from_directory` define them, so `class_indices` match what tutorial users expect.
A split can also be a label file (label_files.py): its classes are its sorted labels, and it
becomes the same `Split`, so everything downstream works on either.
Everything here is plain Python, so layout errors surface before TensorFlow's slow import.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from cnnclf.data.label_files import (
    is_label_file,
    is_multi_label,
    multi_label_rows,
    read_label_file,
    single_label_rows,
)
from cnnclf.data.listing import IMAGE_EXTENSIONS, is_image_name, list_files, list_images
from cnnclf.errors import ConfigError, DataError

# Folder names that mark splits rather than classes (issue 15: train/ and val/ were two classes).
TRAIN_SPLIT_NAMES = ("training_set", "train", "training")
TEST_SPLIT_NAMES = ("test_set", "val", "valid", "validation", "test")
# A multi-label image's entry in `Split.labels`: it has no single class.
NO_SINGLE_LABEL = -1


def multi_label_split(paths: list[str], label_sets: list[tuple[int, ...]]) -> Split:
    """A multi-label `Split` of parallel paths and class-index tuples."""
    return Split(list(paths), [NO_SINGLE_LABEL] * len(paths), [tuple(s) for s in label_sets])


@dataclass(frozen=True)
class Split:
    """One set of labelled images: parallel lists of paths and class indices.

    A multi-label split also has `label_sets`, each image's class indices (possibly none);
    its `labels` are then `NO_SINGLE_LABEL` placeholders, kept so code that zips paths with
    labels keeps lengths equal.
    """

    paths: list[str]
    labels: list[int]
    label_sets: list[tuple[int, ...]] | None = None

    @property
    def multi_label(self) -> bool:
        return self.label_sets is not None

    def counts(self, class_names: list[str]) -> dict[str, int]:
        """Images per class; an image with two labels counts for both."""
        counts = {name: 0 for name in class_names}
        for labels in self.label_sets if self.label_sets is not None else self.labels:
            for label in labels if isinstance(labels, tuple) else (labels,):
                counts[class_names[label]] += 1
        return counts

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class Dataset:
    """Training and validation splits with the class names they share."""

    class_names: list[str]
    train: Split
    validation: Split
    validation_source: str = "test_dir"
    # Entries listing left out: path -> reason (FIFOs, devices, dangling links, unlistable
    # folders, link loops, a file reached twice). Training reports them; they are not images.
    skipped: dict[str, str] = field(default_factory=dict)
    # Splits read from label files: "train_dir"/"test_dir" -> `LabelFile.source()` (file,
    # format, form); empty for class folders. The bundle records it.
    labels_from: dict[str, dict] = field(default_factory=dict)

    @property
    def class_indices(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.class_names)}

    @property
    def multi_label(self) -> bool:
        """One sigmoid per class (several labels, or none, per image) rather than one class."""
        return self.train.multi_label


def class_folders(root: str | Path, key: str) -> list[str]:
    """Sorted class sub-folder names of `root`; `key` names the config key for error messages."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{key}: folder {root} does not exist{resolved_from(root)}")
    if not root.is_dir():
        raise DataError(f"{key}: {root} is not a folder")
    try:
        with os.scandir(root) as listing:
            entries = [e for e in listing if not e.name.startswith(".")]
    except OSError as exc:
        raise DataError(
            f"{key}: {root} cannot be listed ({exc.strerror or exc}); check its permissions"
        ) from None
    names = sorted(e.name for e in entries if _is_folder(e))
    if not names:
        loose = [e.name for e in entries if is_image_name(e.name)]
        hint = " (images lie directly in it: put them in one sub-folder per class)" if loose else ""
        raise DataError(f"{key}: {root} has no class sub-folders{hint}")
    return names


def resolved_from(path: str | Path) -> str:
    """' (resolved from the current folder /x)' for a relative path, '' for an absolute one.

    Config files hold absolute paths once loaded (config/loader.py resolves theirs from the
    file's folder), so a relative path here came from the command line: saying where it was
    looked for is the whole hint, and an absolute path already says it.
    """
    return "" if os.path.isabs(path) else f" (resolved from the current folder {Path.cwd()})"


def find_splits(data_dir: str | Path, key: str = "DATA_DIR") -> dict[str, Path]:
    """The split folders under `data_dir`, or `data_dir` itself as one class-folder tree.

    A training split (training_set/, train/ or training/) and every evaluation split next to it
    (test_set/, val/, valid/, validation/, test/) are found; the training split comes first.
    `check-data DIR` checks them all; `train --data DIR` trains on them (`train_and_test_dirs`).

    Args:
        data_dir: the folder to look in.
        key: what names it in errors (`DATA_DIR`, `--data`).

    Returns:
        Split name -> folder, e.g. `{"train": pets/train, "val": pets/val}`.
    """
    root = Path(data_dir)
    if is_label_file(root) and not root.is_dir():
        return {root.stem: root}  # read_label_file says if it is missing
    if not root.is_dir():
        raise ConfigError(f"{key} {root}: no such folder{resolved_from(root)}")
    try:
        with os.scandir(root) as listing:
            folders = {e.name.lower(): e.name for e in listing if e.is_dir()}
    except OSError as exc:
        raise ConfigError(f"{key} {root}: cannot be listed ({exc.strerror or exc})") from None
    train = [folders[n] for n in TRAIN_SPLIT_NAMES if n in folders][:1]
    tests = [folders[n] for n in TEST_SPLIT_NAMES if n in folders]
    if not train:
        tests = [folders[n] for n in ("test_set",) if n in folders]
    if not train + tests:
        files = label_files_in(root)
        if files:
            return files
    return {name: root / name for name in train + tests} or {root.name: root}


def label_files_in(folder: Path) -> dict[str, Path]:
    """The label files a folder without split folders holds: train.csv (or train.jsonl,
    training.csv, ...) and each evaluation split's file beside it (val.csv, test.csv, ...), or
    one labels.csv / labels.jsonl; {} when it holds neither.

    Split names are the split folders' names, so `train_and_test_dirs` picks the same pair.
    """
    try:
        with os.scandir(folder) as listing:
            names = sorted(e.name for e in listing if is_label_file(e.name) and e.is_file())
    except OSError:
        return {}
    by_stem: dict[str, str] = {}
    for name in names:  # train.csv before train.jsonl
        by_stem.setdefault(name.rsplit(".", 1)[0].lower(), name)
    train = [by_stem[n] for n in TRAIN_SPLIT_NAMES if n in by_stem][:1]
    if train:
        tests = [by_stem[n] for n in TEST_SPLIT_NAMES if n in by_stem]
        return {Path(name).stem: folder / name for name in train + tests}
    return {"labels": folder / by_stem["labels"]} if "labels" in by_stem else {}


def train_and_test_dirs(data_dir: str | Path, key: str = "--data") -> tuple[str, str | None]:
    """`data.train_dir` and `data.test_dir` for a folder laid out as `check-data` reads it.

    Args:
        data_dir: holds training_set/ and test_set/, or train/ and val/ (or the other split
            names `find_splits` knows), or the class folders themselves.
        key: what names it in errors.

    Returns:
        The training split and the first evaluation split in `TEST_SPLIT_NAMES` order (val/
        before test/, so a held-out test set stays unseen); test_dir is None when there is no
        evaluation split, and `data.validation_split` is then held out of the training images.

    Example:
        train_and_test_dirs("pets")  # ("pets/train", "pets/val")
    """
    splits = find_splits(data_dir, key)
    (name, train), tests = next(iter(splits.items())), list(splits.values())[1:]
    if is_label_file(train) and not tests:
        return str(train), None  # --data FILE, or a folder holding labels.csv
    if train != Path(data_dir) and name.lower() not in TRAIN_SPLIT_NAMES:
        raise ConfigError(
            f"{key} {data_dir}: has {name}/ but no training split "
            f"({', '.join(n + '/' for n in TRAIN_SPLIT_NAMES)})"
        )
    return str(train), str(tests[0]) if tests else None


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def splits_instead_of_classes(root: str | Path, class_names: list[str], key: str) -> str | None:
    """The one-line error when `root`'s "classes" are really splits (train/cat, val/cat), or None.

    They are when no class folder holds an image directly, each holds sub-folders, and those
    repeat: the class folders carry split names (train, val, ...) and share a sub-folder, or
    they all hold the same two or more sub-folders. One shared sub-folder (cat/images,
    dog/images) is a common class layout, not splits.
    """
    root = Path(root)
    inner = []
    for name in class_names:
        try:
            with os.scandir(root / name) as listing:
                entries = [e for e in listing if not e.name.startswith(".")]
        except OSError:
            return None
        folders = {e.name for e in entries if _is_folder(e)}
        if not folders or any(is_image_name(e.name) for e in entries if e.name not in folders):
            return None
        inner.append(folders)
    if len(inner) < 2:
        return None
    named = [n for n in class_names if n.lower() in TRAIN_SPLIT_NAMES + TEST_SPLIT_NAMES]
    shared = set.intersection(*inner)
    if not (shared and named) and not (len(shared) >= 2 and all(f == inner[0] for f in inner)):
        return None
    by_name = {n.lower(): n for n in class_names}
    train = next((by_name[n] for n in TRAIN_SPLIT_NAMES if n in by_name), class_names[0])
    test = next(
        (by_name[n] for n in TEST_SPLIT_NAMES if n in by_name),
        next(n for n in class_names if n != train),
    )
    listed = ", ".join(f"{n}/" for n in class_names)
    return (
        f"{key}: {root} looks like a folder of splits ({listed}), not of classes: set "
        f"data.train_dir: {root / train} and data.test_dir: {root / test}"
    )


def class_difference(expected: list[str], found: list[str], extra_label: str = "extra") -> str:
    """'missing a, b; extra c': how `found` class folders differ from `expected`."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
        [f"{extra_label} {', '.join(extra)}"] if extra else []
    )
    return "; ".join(parts)


def scan_split(
    root: str | Path, class_names: list[str], key: str, skipped: dict[str, str] | None = None
) -> Split:
    """Lists every class folder of `root` into a `Split`.

    Raises `DataError` when a class folder has no usable image, or when one real file (through
    a symbolic or hard link) sits under two classes: it would be trained as both.
    """
    skipped = {} if skipped is None else skipped
    paths, labels = [], []
    owner: dict[tuple[int, int], tuple[str, str]] = {}
    for index, name in enumerate(class_names):
        folder = Path(root) / name
        found = list_files(folder, skipped)
        images = [(p, k) for p, k in found if is_image_name(os.path.basename(p))]
        if not images:
            raise DataError(
                f"{key}: class folder {folder} has no images "
                f"({', '.join(IMAGE_EXTENSIONS)}){_skipped_hint(folder, skipped)}"
            )
        if not any(_usable(p) for p, _ in images):
            raise DataError(
                f"{key}: class folder {folder} has no usable image: its "
                f"{len(images)} image file(s) are all empty or unreadable"
            )
        for path, identity in images:
            other_class, other = owner.setdefault(identity, (name, path))
            if other_class != name:
                raise DataError(two_classes_message(key, path, name, other, other_class))
        paths += [p for p, _ in images]
        labels += [index] * len(images)
    return Split(paths, labels)


def two_classes_message(key: str, path: str, name: str, other: str, other_class: str) -> str:
    """The error for one real file reached under two classes (a link would train it as both)."""
    return (
        f"{key}: {path} and {other} are the same file, under classes {name} and "
        f"{other_class} (a link): remove the link so each image has one class"
    )


def _usable(path: str) -> bool:
    try:
        return os.stat(path).st_size > 0 and os.access(path, os.R_OK)
    except OSError:
        return False


def _skipped_hint(folder: Path, skipped: dict[str, str]) -> str:
    inside = [
        (p, r) for p, r in skipped.items() if p == str(folder) or p.startswith(str(folder) + os.sep)
    ]
    if not inside:
        return ""
    path, reason = inside[0]
    more = f" and {len(inside) - 1} more" if len(inside) > 1 else ""
    return f"; skipped {path}: {reason}{more}"


def discover(data_config, seed: int) -> Dataset:
    """Builds the training and validation splits that `data_config` describes.

    Args:
        data_config: a `cnnclf.config.DataConfig`; train_dir and test_dir are each a folder of
            class folders or a label file (.csv, .jsonl).
        seed: seeds the stratified `validation_split` when `test_dir` is null (train.seed).

    Returns:
        A `Dataset`. Raises `DataError` naming the key and folder (or the label file and row)
        when the layout is unusable.
    """
    if data_config.train_dir is None:
        raise ConfigError(
            "data.train_dir: is required (a folder with one sub-folder per class, or a label "
            "file: .csv or .jsonl)"
        )
    # getattr: callers (and tests) pass DataConfig-like objects written before the key existed.
    if getattr(data_config, "multi_label", "auto") is True and not is_label_file(
        data_config.train_dir
    ):
        raise ConfigError(
            "data.multi_label: true needs data.train_dir to be a label file (.csv or .jsonl): "
            "class folders give each image one class"
        )
    skipped: dict[str, str] = {}
    labels_from: dict[str, dict] = {}
    class_names, train = _read_split(data_config, "train_dir", None, skipped, labels_from)
    if data_config.test_dir is None:
        carve = _carve_multi_label if train.multi_label else _carve_validation
        dataset = carve(class_names, train, data_config.validation_split, seed, skipped)
        return dataclasses.replace(dataset, labels_from=labels_from)
    # The test file is read as the training file was: one label per row as validation of a
    # multi-label model is fine; several as validation of a single-label model are not.
    multi = True if train.multi_label else "single"
    _, validation = _read_split(data_config, "test_dir", class_names, skipped, labels_from, multi)
    return Dataset(class_names, train, validation, skipped=skipped, labels_from=labels_from)


def _read_split(
    data_config, name: str, class_names, skipped, labels_from, multi_label=None
) -> tuple[list, Split]:
    """(class names, split) of data.train_dir (`class_names` None) or data.test_dir (the
    training classes, which it must have), from class folders or a label file.

    `multi_label` True reads the file as multi-label whatever its rows hold (a test file of a
    multi-label training file may have one label per row), "single" as single-label; None
    follows data.multi_label."""
    root, key = getattr(data_config, name), f"data.{name}"
    if is_label_file(root):
        labels = read_label_file(root, key)
        labels_from[name] = labels.source()
        wanted = getattr(data_config, "multi_label", "auto") if multi_label is None else multi_label
        if is_multi_label(labels, wanted):
            names, paths, sets = multi_label_rows(labels, key, class_names, skipped)
            return names, multi_label_split(paths, sets)
        names, paths, indices = single_label_rows(labels, key, class_names, wanted, skipped)
        return names, Split(paths, indices)
    names = class_folders(root, key)
    _refuse_splits(root, names, key)
    if class_names is None and len(names) < 2:
        raise DataError(
            f"{key}: {root} has only one class folder ({names[0]}); a classifier needs at least two"
        )
    if class_names is not None and names != class_names:
        raise DataError(
            f"{key}: classes differ from data.train_dir's "
            f"({class_difference(class_names, names)}); both need the same class sub-folders"
        )
    return names, scan_split(root, names, key, skipped)


def _refuse_splits(root, class_names: list[str], key: str) -> None:
    message = splits_instead_of_classes(root, class_names, key)
    if message:
        raise DataError(message)


def _carve_validation(
    class_names, train: Split, fraction: float, seed: int, skipped: dict[str, str]
) -> Dataset:
    """Stratified, seeded hold-out: every class keeps the same share in validation."""
    rng = random.Random(seed)
    per_class = []
    for index in range(len(class_names)):
        paths = [p for p, label in zip(train.paths, train.labels) if label == index]
        rng.shuffle(paths)
        per_class.append(paths)
    held_out = held_out_counts(
        {name: len(paths) for name, paths in zip(class_names, per_class)}, fraction
    )
    keep_paths, keep_labels, val_paths, val_labels = [], [], [], []
    for index, paths in enumerate(per_class):
        n_val = held_out[class_names[index]]
        val_paths += sorted(paths[:n_val])
        val_labels += [index] * n_val
        keep_paths += sorted(paths[n_val:])
        keep_labels += [index] * (len(paths) - n_val)
    return Dataset(
        class_names,
        Split(keep_paths, keep_labels),
        Split(val_paths, val_labels),
        validation_source="validation_split",
        skipped=skipped,
    )


def _carve_multi_label(
    class_names, train: Split, fraction: float, seed: int, skipped: dict[str, str]
) -> Dataset:
    """Iterative stratification (stratify.py): every label keeps its share in validation."""
    from cnnclf.data.stratify import iterative_hold_out

    assert train.label_sets is not None  # only called for a multi-label split
    held = iterative_hold_out(train.label_sets, len(class_names), fraction, seed)
    parts: list[list[tuple[str, tuple[int, ...]]]] = [[], []]
    for path, labels, out in zip(train.paths, train.label_sets, held):
        parts[out].append((path, labels))
    keep, val = (sorted(part) for part in parts)
    if not keep or not val:
        raise DataError(
            f"data.validation_split: {len(train)} image(s) are too few to hold "
            f"{fraction:.0%} out; add images or set data.test_dir"
        )
    return Dataset(
        class_names,
        multi_label_split([p for p, _ in keep], [s for _, s in keep]),
        multi_label_split([p for p, _ in val], [s for _, s in val]),
        validation_source="validation_split",
        skipped=skipped,
    )


def held_out_counts(counts: dict[str, int], fraction: float) -> dict[str, int]:
    """How many images per class `data.validation_split` holds out of data.train_dir: the
    numbers `discover` splits by (and `check-data` shows).

    Args:
        counts: class -> images listed in data.train_dir.
        fraction: data.validation_split.

    Returns:
        class -> images held out for validation (the rest train).

    Raises:
        DataError: a class has too few images to hold any out and still train on some.
    """
    held_out = {}
    for name, n in counts.items():
        n_val = max(1, round(n * fraction)) if n > 1 else 0
        if n_val == 0 or n_val >= n:
            raise DataError(
                f"data.validation_split: class {name} has {n} image(s), too few to hold "
                f"{fraction:.0%} out; add images or set data.test_dir"
            )
        held_out[name] = n_val
    return held_out


def expand_inputs(inputs: list[str] | tuple[str, ...]) -> list[str]:
    """Turns predict's PATH arguments (files, folders, globs) into image paths, in order.

    Raises `ConfigError` (a usage error) for an argument that matches nothing. Image-named
    entries a folder listing skips (a FIFO, a dangling link) are kept, so the decoder reports
    each one as an error instead of predict dropping it silently.
    """
    paths: list[str] = []
    for arg in inputs:
        if os.path.isdir(arg):
            skipped: dict[str, str] = {}
            found = list_images(arg, skipped)
            found = sorted(found + [p for p in skipped if is_image_name(os.path.basename(p))])
            if not found:
                raise ConfigError(f"{arg}: folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        elif os.path.exists(arg):
            paths.append(arg)
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            # Not isfile: a FIFO or dangling link matched by name is reported by the decoder.
            found = [
                m for m in matches if not os.path.isdir(m) and is_image_name(os.path.basename(m))
            ]
            for m in matches:
                if os.path.isdir(m):
                    found += list_images(m)
            if not found:
                raise ConfigError(f"{arg}: no image matches this pattern")
            paths += found
        else:
            raise ConfigError(f"{arg}: no such file or folder")
    # Duplicates dropped, first occurrence kept, order kept.
    return list(dict.fromkeys(paths))
