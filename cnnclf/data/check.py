"""`cnnclf check-data`: what is in a data set, and what in it will be skipped, converted or wrong.

Readability is decided by `decode.load_image`, the decoder training uses, so "unreadable" here
means exactly "skipped by training". Everything else is read from Pillow's metadata and the file
bytes (content hashes find duplicates and train/test leakage). No TensorFlow.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from PIL import Image, ImageOps

from cnnclf.data.check_labels import (
    BAD_LABEL,
    MISSING,
    class_names_of,
    label_file_jobs,
    read_label_files,
    unreadable_classes,
)
from cnnclf.data.decode import (
    ImageSpec,
    convert_mode,
    load_image,
    open_image,
    open_regular,
    read_info,
)
from cnnclf.data.label_files import is_label_file
from cnnclf.data.layout import (
    class_folders,
    held_out_counts,
    splits_instead_of_classes,
    two_classes_message,
)
from cnnclf.data.listing import ALREADY_LISTED, SAME_FILE, is_image_name, list_files
from cnnclf.errors import ConfigError, DataError, ImageError

_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".gif": "GIF",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
_EXTENSION_FOR = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "WEBP": ".webp",
    "MPO": ".jpg",
}
# Severity: error = skipped by training; warning = used, but probably not what you want;
# info = used after a conversion that training and predict both apply.
_SEVERITY = {
    BAD_LABEL: "error",
    MISSING: "error",
    "unreadable": "error",
    "not_listed": "error",
    "format_mismatch": "warning",
    "duplicate": "warning",
    "link_loop": "info",
    "leakage": "warning",
    "too_small": "warning",
    "not_an_image": "info",
    "cmyk": "info",
    "transparency": "info",
    "sixteen_bit": "info",
    "palette": "info",
    "exif_rotated": "info",
}
_ADVICE = {
    BAD_LABEL: "training stops on this row of the label file; fix or remove it",
    MISSING: "listed in the label file, but no image is there; training skips it: fix the "
    "path or remove the row",
    "unreadable": "training skips it; re-export or delete the file",
    "not_listed": "training skips it (not a regular file, a dangling link or a folder it cannot "
    "list); remove it, or fix the link or permissions",
    "link_loop": "a folder reached twice through a link; listed once, nothing is lost",
    "format_mismatch": "decoded by content, but rename it (--fix-to does)",
    "duplicate": "the same image appears more than once in this split; keep one",
    "leakage": "the same image is in the training and test sets: test accuracy is inflated; "
    "remove it from one (--fix-to drops the training copy)",
    "too_small": "it will be upscaled to image_size, losing detail",
    "not_an_image": "ignored (not an image extension)",
    "cmyk": "converted to RGB",
    "transparency": "transparent pixels composited on white",
    "sixteen_bit": "16-bit values scaled to 8 bits (full range)",
    "palette": "palette expanded to RGB",
    "exif_rotated": "EXIF orientation applied (the image is used upright)",
}


@dataclass
class Problem:
    kind: str
    path: str
    detail: str = ""

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "severity": _SEVERITY[self.kind],
            "path": self.path,
            "detail": self.detail,
            "advice": _ADVICE[self.kind],
        }


# Under this many images a class, a pretrained backbone is worth suggesting (model/transfer.py says
# the same at the start of train).
SMALL_CLASS = 1000


@dataclass
class CheckReport:
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    fatal: list[str] = field(default_factory=list)
    leaked_images: int = 0
    # What to start from when a class is small (transfer.small_data_advice, for the model's
    # image size and colour); None when the config starts from a backbone or another bundle.
    small_data_advice: str | None = None
    # With no test set: {"fraction", "from" (the split), "held_out" (class -> images)}, what
    # data.validation_split will hold out of the training images for validation.
    validation_split: dict | None = None
    # Splits read from label files: split -> {file, format, form, rows, missing_images,
    # multi_label, first_multi_label_row, images_without_label, co_occurrence}.
    label_files: dict[str, dict] = field(default_factory=dict)

    @property
    def imbalance(self) -> dict[str, float | None]:
        ratios = {}
        for split, counts in self.splits.items():
            present = [c for c in counts.values() if c]
            ratios[split] = (max(present) / min(present)) if present else None
        return ratios

    def suggestions(self) -> list[str]:
        train = next(iter(self.splits), None)
        ratio = self.imbalance.get(train) if train else None
        out = []
        if ratio and ratio > 1.5:
            out.append(
                f"{train}: classes differ by {ratio:.1f}x; consider train.class_weight: balanced"
            )
        if self.leaked_images:
            out.append(f"{self.leaked_images} image(s) are in both training and test sets")
        counts = [c for c in self.splits.get(train, {}).values() if c] if train else []
        if self.small_data_advice and counts and min(counts) < SMALL_CLASS:
            out.append(
                f"{train}: {min(counts)} images in the smallest class is few to train "
                f"a model from scratch; {self.small_data_advice}"
            )
        return out

    def to_json(self) -> dict:
        counts: dict[str, int] = defaultdict(int)
        for p in self.problems:
            counts[p.kind] += 1
        return {
            "splits": self.splits,
            "imbalance_ratio": self.imbalance,
            "problem_counts": dict(counts),
            "leaked_images": self.leaked_images,
            "validation_split": self.validation_split,
            "label_files": self.label_files,
            "fatal": self.fatal,
            "suggestions": self.suggestions(),
            "problems": [p.to_json() for p in self.problems],
        }


def check_data(
    splits: dict[str, Path],
    image_size: tuple[int, int] | None = None,
    workers: int | None = None,
    validation_split: float | None = None,
) -> CheckReport:
    """Inspects every file of every split.

    Args:
        splits: split name -> class-folder tree or label file (the first is treated as the
            training set).
        image_size: (height, width) the model will use, to flag images smaller than it.
        workers: threads reading files (default: one per CPU core).
        validation_split: with a single split (no test set), data.validation_split: the report
            then says how many images of each class training will hold out to validate on.
    """
    report = CheckReport()
    labelled = read_label_files(splits, report)
    class_lists = _class_lists({n: r for n, r in splits.items() if not is_label_file(r)}, report)
    class_lists.update(class_names_of(labelled, splits))
    jobs = []
    for split, classes in class_lists.items():
        if split in labelled:
            jobs += label_file_jobs(split, labelled[split], classes, report)
            continue
        jobs += _list_split(split, splits[split], classes, report)
    spec = ImageSpec(cast("tuple[int, int]", tuple(image_size)) if image_size else (32, 32))
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda job: _inspect(job[2], spec, image_size), jobs))
    hashes: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    readable_per_class: dict[tuple[str, str], int] = defaultdict(int)
    for (split, cls, path), (digest, problems, readable) in zip(jobs, results):
        report.problems += problems
        if readable:
            assert digest is not None  # every readable file was hashed
            hashes[split][digest].append(path)
            readable_per_class[split, cls] += 1
    unreadable = {p.path for p in report.problems if p.kind == "unreadable"}
    for split, labels in labelled.items():
        unreadable_classes(split, labels, unreadable, report)
    for split, classes in class_lists.items():
        if split in labelled:
            continue
        for cls in classes:
            count = report.splits[split][cls]
            if count and not readable_per_class[split, cls]:
                report.fatal.append(
                    f"{split}: class folder {splits[split] / cls} has no "
                    f"readable image (all {count} are unreadable or empty)"
                )
    _report_copies(hashes, next(iter(splits), None), list(class_lists), report)
    if validation_split is not None and len(splits) == 1:
        _report_held_out(next(iter(splits)), validation_split, report)
    order = list(_SEVERITY)
    report.problems.sort(key=lambda p: (order.index(p.kind), p.path))
    return report


def _class_lists(splits: dict[str, Path], report: CheckReport) -> dict[str, list[str]]:
    """Each split's classes; what stops training (no classes, one class, classes that differ
    from the training set's) goes to `report.fatal`, and such a split is left out."""
    class_lists = {}
    for name, root in splits.items():
        try:
            classes = class_folders(root, name)
        except DataError as exc:
            report.fatal.append(str(exc))
            continue
        as_splits = splits_instead_of_classes(root, classes, name)
        if as_splits:
            report.fatal.append(as_splits)
            continue
        class_lists[name] = classes
        if len(classes) < 2:
            report.fatal.append(
                f"{name}: only one class folder ({classes[0]}); a classifier needs at least two"
            )
    train_name = next(iter(splits), None)
    for other in class_lists:
        if (
            train_name in class_lists
            and other != train_name
            and class_lists[other] != class_lists[train_name]
        ):
            report.fatal.append(
                f"{other}: classes differ from {train_name}'s "
                f"({', '.join(class_lists[other])} vs "
                f"{', '.join(class_lists[train_name])})"
            )
    return class_lists


def _list_split(
    split: str, root: Path, classes: list[str], report: CheckReport
) -> list[tuple[str, str, str]]:
    """(split, class, path) of every image of one split, to inspect; files that are no image,
    cannot be listed, or sit under two classes are reported here."""
    report.splits[split] = {}
    jobs = []
    skipped: dict[str, str] = {}
    owner: dict[tuple[int, int], tuple[str, str]] = {}
    conflicts: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for cls in classes:
        folder = root / cls
        files = list_files(folder, skipped)
        images = [p for p, _ in files if is_image_name(os.path.basename(p))]
        report.splits[split][cls] = len(images)
        if not images:
            report.fatal.append(f"{split}: class folder {folder} has no images")
        report.problems += [
            Problem("not_an_image", p) for p, _ in files if not is_image_name(os.path.basename(p))
        ]
        for path, identity in files:
            other_class, other = owner.setdefault(identity, (cls, path))
            if other_class != cls:
                conflicts.setdefault((cls, other_class), []).append((path, other))
        jobs += [(split, cls, f) for f in images]
    report.problems += [_skip_problem(path, reason) for path, reason in skipped.items()]
    for (cls, other_class), pairs in conflicts.items():
        # A linked folder puts hundreds of files under two classes: one line per class pair.
        (path, other), more = pairs[0], len(pairs) - 1
        report.fatal.append(
            two_classes_message(split, path, cls, other, other_class)
            + (f"; {more} more file(s) like it" if more else "")
        )
    return jobs


def _report_held_out(train_name: str, fraction: float, report: CheckReport) -> None:
    """What data.validation_split takes from each class: `layout.held_out_counts`, the numbers
    training splits by; a class too small to split is fatal, as it is for training."""
    if report.label_files.get(train_name, {}).get("multi_label"):
        return  # split by label sets, not by class, once multi-label training exists
    counts = report.splits.get(train_name)
    if not counts or not all(counts.values()):
        return  # no classes, or an empty class: already fatal
    try:
        held_out = held_out_counts(counts, fraction)
    except DataError as exc:
        report.fatal.append(str(exc))
        return
    report.validation_split = {"fraction": fraction, "from": train_name, "held_out": held_out}


def _report_copies(hashes: dict, train_name: str | None, names: list[str], report) -> None:
    """Duplicates within a split, and training images leaked into another split."""
    for by_hash in hashes.values():
        for paths in by_hash.values():
            report.problems += [
                Problem("duplicate", p, f"same bytes as {paths[0]}") for p in paths[1:]
            ]
    if train_name not in hashes:
        return
    train_hashes = hashes[train_name]
    for other in names:
        if other == train_name:
            continue
        other_hashes = hashes.get(other, {})
        leaked = set(train_hashes) & set(other_hashes)
        report.leaked_images += len(leaked)
        for digest in sorted(leaked):
            report.problems += [
                Problem("leakage", p, f"also in {other}: {other_hashes[digest][0]}")
                for p in train_hashes[digest]
            ]


def _skip_problem(path: str, reason: str) -> Problem:
    if reason.startswith(ALREADY_LISTED):
        return Problem("link_loop", path, reason)
    if reason.startswith(SAME_FILE):
        return Problem("duplicate", path, reason)
    return Problem("not_listed", path, reason)


def _inspect(path: str, spec: ImageSpec, image_size) -> tuple[str | None, list[Problem], bool]:
    """(content hash, problems, readable) for one file; a bad file is a problem, never a crash."""
    try:
        load_image(path, spec)
        info = read_info(path)
        with open_regular(path) as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except ImageError as exc:
        return None, [Problem("unreadable", path, exc.reason)], False
    except OSError as exc:  # changed or vanished between the reads
        return None, [Problem("unreadable", path, f"cannot be read ({exc.strerror or exc})")], False
    except Exception as exc:
        return (
            None,
            [Problem("unreadable", path, f"cannot be decoded ({type(exc).__name__}: {exc})")],
            False,
        )
    problems = []
    expected = _FORMATS.get(Path(path).suffix.lower())
    if (
        info.format
        and expected
        and info.format != expected
        and not (expected == "JPEG" and info.format == "MPO")
    ):
        problems.append(
            Problem("format_mismatch", path, f"{info.format} file named {Path(path).suffix}")
        )
    mode = info.mode
    if mode == "CMYK":
        problems.append(Problem("cmyk", path))
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and info.transparency):
        problems.append(Problem("transparency", path, mode))
    elif mode == "P":
        problems.append(Problem("palette", path))
    elif mode.startswith("I"):
        problems.append(Problem("sixteen_bit", path, mode))
    if info.orientation not in (0, 1):
        problems.append(Problem("exif_rotated", path, f"orientation {info.orientation}"))
    width, height = info.size
    if image_size and (height < image_size[0] or width < image_size[1]):
        problems.append(
            Problem(
                "too_small",
                path,
                f"{width}x{height} pixels, smaller than image_size {image_size[1]}x{image_size[0]}",
            )
        )
    return digest, problems, True


def check_fix_target(sources: list[Path], destination: Path) -> None:
    """Refuses a --fix-to folder inside the data it copies, or one that already holds files.

    Inside a split, the copy's folders would be read as another class by the next check or
    training run (and copied again by the next --fix-to); a folder that holds the data holds
    files, so the second rule covers it. Checked before the data is read, and again by
    `write_fixed_copy`.

    Raises:
        ConfigError: one line naming --fix-to and the folder it is inside.
    """
    destination = Path(destination)
    label_files = [source for source in sources if Path(source).is_file()]
    if label_files:  # the copy is made class folder by class folder
        raise ConfigError(
            f"--fix-to {destination}: works on class folders only, and {label_files[0]} is a "
            "label file; fix its rows instead (check-data names each one)"
        )
    target = destination.resolve()
    for source in sources:
        folder = Path(source).resolve()
        if target == folder or folder in target.parents:
            raise ConfigError(
                f"--fix-to {destination}: is inside the data being checked ({source}), where "
                "the copy would be read as more data; choose a folder outside it"
            )
    if destination.is_dir() and any(destination.iterdir()):
        raise ConfigError(f"--fix-to {destination}: folder exists and is not empty")


def write_fixed_copy(splits: dict[str, Path], report: CheckReport, destination: Path) -> dict:
    """Writes a cleaned copy: unreadable files, duplicates and leaked training copies dropped;
    EXIF, CMYK, transparency, palette and 16-bit images converted; extensions corrected."""
    destination = Path(destination)
    check_fix_target(list(splits.values()), destination)
    drop = {p.path for p in report.problems if p.kind in ("unreadable", "duplicate", "leakage")}
    convert = {
        p.path
        for p in report.problems
        if p.kind in ("cmyk", "transparency", "sixteen_bit", "palette", "exif_rotated")
    }
    rename = {p.path for p in report.problems if p.kind == "format_mismatch"}
    written = dropped = converted = 0
    for split, root in splits.items():
        for cls, _ in report.splits.get(split, {}).items():
            for path, _ in list_files(root / cls):
                if not is_image_name(os.path.basename(path)):
                    continue
                if path in drop:
                    dropped += 1
                    continue
                target = destination / split / Path(path).relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                if path in convert:
                    with open_image(path) as image:
                        fixed = _normalised(image)
                    fixed.save(target.with_suffix(".png"))
                    converted += 1
                elif path in rename:
                    with open_image(path) as image:
                        suffix = _EXTENSION_FOR.get(image.format or "", Path(path).suffix)
                    shutil.copyfile(path, target.with_suffix(suffix))
                else:
                    shutil.copyfile(path, target)
                written += 1
    return {"written": written, "dropped": dropped, "converted": converted}


def _normalised(image: Image.Image) -> Image.Image:
    """Upright, 8-bit, opaque: what load_image would feed the model, before resizing."""
    image = ImageOps.exif_transpose(image)
    gray = image.mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
    return convert_mode(image, "grayscale" if gray else "rgb")
