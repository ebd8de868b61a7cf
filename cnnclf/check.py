"""`cnnclf check-data`: what is in a data set, and what in it will be skipped, converted or wrong.

Readability is decided by `images.load_image`, the decoder training uses, so "unreadable" here
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

from PIL import Image, ImageOps

from cnnclf.errors import ConfigError, DataError, ImageError
from cnnclf.files import class_folders, is_image_name
from cnnclf.images import ImageSpec, convert_mode, load_image

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP",
            ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
_EXTENSION_FOR = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif",
                  "WEBP": ".webp", "MPO": ".jpg"}
# Severity: error = skipped by training; warning = used, but probably not what you want;
# info = used after a conversion that training and predict both apply.
_SEVERITY = {"unreadable": "error", "format_mismatch": "warning", "duplicate": "warning",
             "leakage": "warning", "too_small": "warning", "not_an_image": "info",
             "cmyk": "info", "transparency": "info", "sixteen_bit": "info", "palette": "info",
             "exif_rotated": "info"}
_ADVICE = {
    "unreadable": "training skips it; re-export or delete the file",
    "format_mismatch": "decoded by content, but rename it (--fix-to does)",
    "duplicate": "the same bytes appear more than once in this split; keep one",
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
        return {"kind": self.kind, "severity": _SEVERITY[self.kind], "path": self.path,
                "detail": self.detail, "advice": _ADVICE[self.kind]}


@dataclass
class CheckReport:
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    fatal: list[str] = field(default_factory=list)
    leaked_images: int = 0

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
            out.append(f"{train}: classes differ by {ratio:.1f}x; consider "
                       "train.class_weight: balanced")
        if self.leaked_images:
            out.append(f"{self.leaked_images} image(s) are in both training and test sets")
        return out

    def to_json(self) -> dict:
        counts = defaultdict(int)
        for p in self.problems:
            counts[p.kind] += 1
        return {"splits": self.splits, "imbalance_ratio": self.imbalance,
                "problem_counts": dict(counts), "leaked_images": self.leaked_images,
                "fatal": self.fatal, "suggestions": self.suggestions(),
                "problems": [p.to_json() for p in self.problems]}


def find_splits(data_dir: str | Path) -> dict[str, Path]:
    """training_set/ and test_set/ under DATA_DIR, or DATA_DIR itself as one class-folder tree."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ConfigError(f"DATA_DIR {root}: no such folder")
    named = {name: root / name for name in ("training_set", "test_set") if (root / name).is_dir()}
    return named or {root.name: root}


def check_data(splits: dict[str, Path], image_size: tuple[int, int] | None = None,
               workers: int | None = None) -> CheckReport:
    """Inspects every file of every split.

    Args:
        splits: split name -> class-folder tree (the first is treated as the training set).
        image_size: (height, width) the model will use, to flag images smaller than it.
        workers: threads reading files (default: one per CPU core).
    """
    report = CheckReport()
    class_lists = {}
    for name, root in splits.items():
        try:
            classes = class_folders(root, name)
        except DataError as exc:
            report.fatal.append(str(exc))
            continue
        class_lists[name] = classes
        if len(classes) < 2:
            report.fatal.append(f"{name}: only one class folder ({classes[0]}); a classifier "
                                "needs at least two")
    names = list(class_lists)
    if len(names) == 2 and class_lists[names[0]] != class_lists[names[1]]:
        report.fatal.append(f"{names[1]}: classes differ from {names[0]}'s "
                            f"({', '.join(class_lists[names[1]])} vs "
                            f"{', '.join(class_lists[names[0]])})")
    jobs = []
    for split, classes in class_lists.items():
        report.splits[split] = {}
        for cls in classes:
            files = _all_files(splits[split] / cls)
            images = [f for f in files if is_image_name(os.path.basename(f))]
            report.splits[split][cls] = len(images)
            if not images:
                report.fatal.append(f"{split}: class folder {splits[split] / cls} has no images")
            report.problems += [Problem("not_an_image", f) for f in files
                                if not is_image_name(os.path.basename(f))]
            jobs += [(split, cls, f) for f in images]
    spec = ImageSpec(tuple(image_size) if image_size else (32, 32))
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda job: _inspect(job[2], spec, image_size), jobs))
    hashes: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for (split, _, path), (digest, problems, readable) in zip(jobs, results):
        report.problems += problems
        if readable:
            hashes[split][digest].append(path)
    for split, by_hash in hashes.items():
        for paths in by_hash.values():
            report.problems += [Problem("duplicate", p, f"same bytes as {paths[0]}")
                                for p in paths[1:]]
    if len(names) == 2:
        train_hashes, test_hashes = hashes[names[0]], hashes[names[1]]
        leaked = set(train_hashes) & set(test_hashes)
        report.leaked_images = len(leaked)
        for digest in sorted(leaked):
            report.problems += [Problem("leakage", p, f"also in {names[1]}: "
                                        f"{test_hashes[digest][0]}")
                                for p in train_hashes[digest]]
    order = list(_SEVERITY)
    report.problems.sort(key=lambda p: (order.index(p.kind), p.path))
    return report


def _all_files(folder: Path) -> list[str]:
    found = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        # Dot-files (.DS_Store, AppleDouble ._x.jpg) are OS litter: ignored, not reported.
        found += [os.path.join(current, f) for f in files if not f.startswith(".")]
    return sorted(found)


def _inspect(path: str, spec: ImageSpec, image_size) -> tuple[str, list[Problem], bool]:
    """(content hash, problems, readable) for one file."""
    problems = []
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    try:
        load_image(path, spec)
    except ImageError as exc:
        return digest, [Problem("unreadable", path, exc.reason)], False
    with Image.open(path) as image:
        expected = _FORMATS.get(Path(path).suffix.lower())
        if image.format and expected and image.format != expected and not (
                expected == "JPEG" and image.format == "MPO"):
            problems.append(Problem("format_mismatch", path,
                                    f"{image.format} file named {Path(path).suffix}"))
        orientation = image.getexif().get(0x0112, 1)
        image.load()  # GIF transparency and some modes are only known once decoded
        mode = image.mode
        if mode == "CMYK":
            problems.append(Problem("cmyk", path))
        elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
            problems.append(Problem("transparency", path, mode))
        elif mode == "P":
            problems.append(Problem("palette", path))
        elif mode.startswith("I"):
            problems.append(Problem("sixteen_bit", path, mode))
        if orientation not in (0, 1):
            problems.append(Problem("exif_rotated", path, f"orientation {orientation}"))
        width, height = image.size
        if image_size and (height < image_size[0] or width < image_size[1]):
            problems.append(Problem("too_small", path, f"{width}x{height} pixels, smaller "
                                    f"than image_size {image_size[1]}x{image_size[0]}"))
    return digest, problems, True


def write_fixed_copy(splits: dict[str, Path], report: CheckReport, destination: Path) -> dict:
    """Writes a cleaned copy: unreadable files, duplicates and leaked training copies dropped;
    EXIF, CMYK, transparency, palette and 16-bit images converted; extensions corrected."""
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise ConfigError(f"--fix-to {destination}: folder exists and is not empty")
    drop = {p.path for p in report.problems if p.kind in ("unreadable", "duplicate", "leakage")}
    convert = {p.path for p in report.problems
               if p.kind in ("cmyk", "transparency", "sixteen_bit", "palette", "exif_rotated")}
    rename = {p.path for p in report.problems if p.kind == "format_mismatch"}
    written = dropped = converted = 0
    for split, root in splits.items():
        for cls, _ in report.splits.get(split, {}).items():
            for path in _all_files(root / cls):
                if not is_image_name(os.path.basename(path)):
                    continue
                if path in drop:
                    dropped += 1
                    continue
                target = destination / split / Path(path).relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                if path in convert:
                    with Image.open(path) as image:
                        fixed = _normalised(image)
                    fixed.save(target.with_suffix(".png"))
                    converted += 1
                elif path in rename:
                    with Image.open(path) as image:
                        suffix = _EXTENSION_FOR.get(image.format, Path(path).suffix)
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
