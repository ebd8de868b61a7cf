"""Finding images and classes on disk, without TensorFlow.

Classes are the sorted sub-folder names of a split's root, as Keras' `flow_from_directory` and
`image_dataset_from_directory` define them, so `class_indices` match what tutorial users expect.
Everything here is plain Python, so layout errors surface before the 2 s TensorFlow import.
"""

from __future__ import annotations

import glob
import os
import random
from dataclasses import dataclass
from pathlib import Path

from cnnclf.errors import ConfigError, DataError

# What Keras reads (bmp, gif, jpeg, jpg, png) plus the formats Pillow decodes just as well.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def is_image_name(name: str) -> bool:
    # Dot-files include macOS AppleDouble `._x.jpg` companions, which are not images.
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str | Path) -> list[str]:
    """Image files under `folder`, recursively, sorted; dot-files and dot-folders are skipped."""
    found = []
    stack = [os.fspath(folder)]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=True):
                stack.append(entry.path)
            elif is_image_name(entry.name):
                found.append(entry.path)
    found.sort()
    return found


@dataclass(frozen=True)
class Split:
    """One set of labelled images: parallel lists of paths and class indices."""

    paths: list[str]
    labels: list[int]

    def counts(self, class_names: list[str]) -> dict[str, int]:
        counts = {name: 0 for name in class_names}
        for label in self.labels:
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

    @property
    def class_indices(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.class_names)}


def class_folders(root: str | Path, key: str) -> list[str]:
    """Sorted class sub-folder names of `root`; `key` names the config key for error messages."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{key}: folder {root} does not exist (relative paths are resolved from "
                        f"{Path.cwd()})")
    if not root.is_dir():
        raise DataError(f"{key}: {root} is not a folder")
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not names:
        loose = [e.name for e in os.scandir(root) if is_image_name(e.name)]
        hint = " (images lie directly in it: put them in one sub-folder per class)" if loose else ""
        raise DataError(f"{key}: {root} has no class sub-folders{hint}")
    return names


def class_difference(expected: list[str], found: list[str],
                     extra_label: str = "extra") -> str:
    """'missing a, b; extra c': how `found` class folders differ from `expected`."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
        [f"{extra_label} {', '.join(extra)}"] if extra else [])
    return "; ".join(parts)


def scan_split(root: str | Path, class_names: list[str], key: str) -> Split:
    paths, labels = [], []
    for index, name in enumerate(class_names):
        images = list_images(Path(root) / name)
        if not images:
            raise DataError(f"{key}: class folder {Path(root) / name} has no images "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
        paths += images
        labels += [index] * len(images)
    return Split(paths, labels)


def discover(data_config, seed: int) -> Dataset:
    """Builds the training and validation splits that `data_config` describes.

    Args:
        data_config: a `cnnclf.config.DataConfig`.
        seed: seeds the stratified `validation_split` when `test_dir` is null (train.seed).

    Returns:
        A `Dataset`. Raises `DataError` naming the key and folder when the layout is unusable.
    """
    if data_config.train_dir is None:
        raise ConfigError("data.train_dir: is required (a folder with one sub-folder per class)")
    class_names = class_folders(data_config.train_dir, "data.train_dir")
    if len(class_names) < 2:
        raise DataError(f"data.train_dir: {data_config.train_dir} has only one class folder "
                        f"({class_names[0]}); a classifier needs at least two")
    train = scan_split(data_config.train_dir, class_names, "data.train_dir")
    if data_config.test_dir is None:
        return _carve_validation(class_names, train, data_config.validation_split, seed)
    test_names = class_folders(data_config.test_dir, "data.test_dir")
    if test_names != class_names:
        raise DataError(f"data.test_dir: classes differ from data.train_dir's "
                        f"({class_difference(class_names, test_names)}); both need the same "
                        "class sub-folders")
    validation = scan_split(data_config.test_dir, class_names, "data.test_dir")
    return Dataset(class_names, train, validation)


def _carve_validation(class_names, train: Split, fraction: float, seed: int) -> Dataset:
    """Stratified, seeded hold-out: every class keeps the same share in validation."""
    rng = random.Random(seed)
    keep_paths, keep_labels, val_paths, val_labels = [], [], [], []
    for index in range(len(class_names)):
        paths = [p for p, label in zip(train.paths, train.labels) if label == index]
        rng.shuffle(paths)
        n_val = max(1, round(len(paths) * fraction)) if len(paths) > 1 else 0
        if n_val == 0 or n_val >= len(paths):
            raise DataError(f"data.validation_split: class {class_names[index]} has "
                            f"{len(paths)} image(s), too few to hold {fraction:.0%} out; "
                            "add images or set data.test_dir")
        val_paths += sorted(paths[:n_val])
        val_labels += [index] * n_val
        keep_paths += sorted(paths[n_val:])
        keep_labels += [index] * (len(paths) - n_val)
    return Dataset(class_names, Split(keep_paths, keep_labels), Split(val_paths, val_labels),
                   validation_source="validation_split")


def expand_inputs(inputs: list[str] | tuple[str, ...]) -> list[str]:
    """Turns predict's PATH arguments (files, folders, globs) into image paths, in order.

    Raises `ConfigError` (a usage error) for an argument that matches nothing.
    """
    paths: list[str] = []
    for arg in inputs:
        if os.path.isdir(arg):
            found = list_images(arg)
            if not found:
                raise ConfigError(f"{arg}: folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        elif os.path.exists(arg):
            paths.append(arg)
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            found = [m for m in matches if os.path.isfile(m) and is_image_name(os.path.basename(m))]
            for m in matches:
                if os.path.isdir(m):
                    found += list_images(m)
            if not found:
                raise ConfigError(f"{arg}: no image matches this pattern")
            paths += found
        else:
            raise ConfigError(f"{arg}: no such file or folder")
    seen = set()
    return [p for p in paths if not (p in seen or seen.add(p))]
