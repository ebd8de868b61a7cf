"""`cnnclf init`: a first config chosen from the data, each choice with the reason for it.

Why here (the training room): the choices span every section (data, augmentation, model,
training), so the module sits above all of them and reuses their rules instead of restating
them: the small-data threshold of check-data (`data.check.SMALL_CLASS`), the backbone table and
its offline rule (`model.backbones`), the advice train prints for small classes
(`model.transfer.small_data_advice`). Nothing here imports TensorFlow: `cnnclf init` reads a
sample of the images and answers in about a second.

    survey(data_dir)  ->  Survey    what the data is (counts, sizes, colour, orientation)
    choose(survey)    ->  [Choice]  what the config says, and why, one line each
    render(...)       ->  YAML      the commented config
"""

from __future__ import annotations

import json
import os
import statistics
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnclf.errors import ConfigError

# Images whose header is read for their size and colour (spread over the classes).
SIZE_SAMPLE = 200
# Images a class decoded for the left-right check: enough for a stable class mean.
FLIP_SAMPLE = 32
# The left-right asymmetry (see `flip_asymmetry`) above which flips would make images the data
# never shows: mean images of photographed objects facing either way score about 0.1-0.2;
# Fashion-MNIST's shoes (all pointing left) and text score 0.4 and more.
FLIP_LIMIT = 0.3
# Largest to smallest class at or above which classes are weighted (train.class_weight:
# balanced) and a binary threshold is chosen on the validation data (youden).
IMBALANCE_RATIO = 1.5
# The backbone init suggests: the smallest and quickest on a CPU of the BACKBONES table.
BACKBONE = "mobilenet_v3_small"
# Seconds init waits for the weights server to answer a HEAD request (it never downloads).
PROBE_TIMEOUT_S = 5


@dataclass(frozen=True)
class Survey:
    """What `survey` found in a data folder (train_dir, test_dir as `train --data` takes it)."""

    train_dir: str
    test_dir: str | None
    counts: dict[str, int]  # training images per class
    median_size: tuple[int, int]  # (height, width) of the sampled images
    grayscale: bool  # every sampled image has one channel (or three equal ones)
    asymmetry: float  # `flip_asymmetry` of the training sample
    weights: str  # "cache", "fetchable" or why ImageNet weights are not available
    sampled: int = 0

    @property
    def smallest(self) -> int:
        return min(self.counts.values())

    @property
    def ratio(self) -> float:
        return max(self.counts.values()) / max(1, self.smallest)


@dataclass(frozen=True)
class Choice:
    """One key of the written config: its value and the one-line reason for it."""

    key: str  # "section.key"
    value: object
    why: str = ""


@dataclass
class Plan:
    choices: list[Choice] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    def set(self, key: str, value: object, why: str = "") -> None:
        self.choices.append(Choice(key, value, why))


def survey(data_dir: str | Path, seed: int = 1337) -> Survey:
    """Reads the layout, the class counts and a sample of the images under `data_dir`."""
    from cnnclf.config.schema import DataConfig
    from cnnclf.data.layout import discover, train_and_test_dirs

    train, test = train_and_test_dirs(data_dir, "DATA")
    dataset = discover(DataConfig(train_dir=train, test_dir=test), seed)
    if dataset.train.multi_label:
        raise ConfigError(
            f"DATA: {train} gives some images more or fewer than one label; init writes "
            "single-label configs only"
        )
    counts = dataset.train.counts(dataset.class_names)
    paths, labels = dataset.train.paths, dataset.train.labels
    rng = np.random.default_rng(seed)
    sizes, grays = _headers(_spread(paths, labels, SIZE_SAMPLE, rng))
    picked = _spread(paths, labels, FLIP_SAMPLE * len(counts), rng)
    by_class = [[p for p in picked if labels[paths.index(p)] == c] for c in range(len(counts))]
    return Survey(
        train_dir=train,
        test_dir=test,
        counts=counts,
        median_size=(
            int(statistics.median(h for h, _ in sizes)),
            int(statistics.median(w for _, w in sizes)),
        ),
        grayscale=all(grays),
        asymmetry=flip_asymmetry([_small_gray(group) for group in by_class if group]),
        weights=imagenet_availability(),
        sampled=len(sizes),
    )


def _spread(paths: list[str], labels: list[int], n: int, rng) -> list[str]:
    """Up to `n` paths, as many from each class as it can give (seeded)."""
    classes = sorted(set(labels))
    per = max(1, n // max(1, len(classes)))
    out: list[str] = []
    for c in classes:
        members = [p for p, label in zip(paths, labels) if label == c]
        out += [members[i] for i in rng.permutation(len(members))[:per]]
    return out


def _headers(paths: list[str]) -> tuple[list[tuple[int, int]], list[bool]]:
    """(height, width) and "one channel" for each readable image among `paths`."""
    from cnnclf.data.decode import read_info
    from cnnclf.errors import ImageError

    sizes, grays = [], []
    for path in paths:
        try:
            info = read_info(path)
        except (ImageError, OSError):
            continue  # check-data reports broken files; init only needs typical ones
        width, height = info.size
        sizes.append((height, width) if info.orientation < 5 else (width, height))
        grays.append(info.mode in ("1", "L", "LA", "I", "I;16", "F"))
    if not sizes:
        raise ConfigError("DATA: none of the sampled images could be read; run cnnclf check-data")
    return sizes, grays


def _small_gray(paths: list[str]) -> np.ndarray:
    """The images decoded as 32x32 grayscale by the one decoder, as floats (n, 32, 32)."""
    from cnnclf.data.decode import ImageSpec, load_image
    from cnnclf.errors import ImageError

    spec = ImageSpec((32, 32), "grayscale")
    images = []
    for path in paths:
        try:
            images.append(load_image(path, spec)[..., 0].astype(np.float64))
        except (ImageError, OSError):
            continue
    return np.stack(images) if images else np.zeros((0, 32, 32))


def flip_asymmetry(groups: list[np.ndarray]) -> float:
    """How much each class's mean image changes when mirrored left-right, 0 (symmetric) up.

    For each class: mean |M - mirror(M)| / mean |M - mean(M)|, with M the class's mean image;
    the classes' mean. Objects photographed facing either way average to a near-symmetric M;
    text, digits and oriented scans (all shoes pointing left) do not, and a flipped image of
    those is one the model never meets. Cheap: 32 images a class at 32x32.

    Example: `flip_asymmetry([np.tile(np.arange(32.0), (4, 32, 1))])` is about 2.0 (a ramp).
    """
    scores = []
    for images in groups:
        if len(images) == 0:
            continue
        mean = images.mean(axis=0)
        spread = np.abs(mean - mean.mean()).mean()
        if spread < 1e-9:
            continue  # a flat mean image says nothing about orientation
        scores.append(float(np.abs(mean - mean[:, ::-1]).mean() / spread))
    return float(np.mean(scores)) if scores else 0.0


def imagenet_availability(name: str = BACKBONE) -> str:
    """ "cache", "fetchable", or why the backbone's ImageNet weights cannot be had.

    Never downloads: a HEAD request to the weights URL (CNNCLF_WEIGHTS_URL or Keras') with a
    short timeout says whether `cnnclf train` could; CNNCLF_OFFLINE=1 skips it.
    """
    from cnnclf.model.backbones import BACKBONES, OFFLINE_ENV, imagenet_url, keras_cache_dir

    spec = BACKBONES[name]
    if (keras_cache_dir() / spec.imagenet_file).is_file():
        return "cache"
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        return f"not in Keras' cache and {OFFLINE_ENV} is set"
    request = urllib.request.Request(imagenet_url(spec), method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            return "fetchable"
    except (OSError, ValueError):
        return f"not in Keras' cache and {imagenet_url(spec)} did not answer"


def image_side(median_side: int, backbone: bool) -> int:
    """The square side images are resized to: the backbone's own resolution, else the data's
    typical shorter side rounded to a multiple of 8 and kept in [16, 64] (a CPU-sized
    from-scratch model: 64x64 costs four times 32x32 and small images gain nothing from
    upscaling)."""
    from cnnclf.model.backbones import BACKBONES

    if backbone:
        return BACKBONES[BACKBONE].default_size
    return int(min(64, max(16, 8 * round(median_side / 8))))


def use_backbone(found: Survey, side: int) -> tuple[bool, str]:
    """Whether to start from the ImageNet backbone, and why (the rules train's hint uses)."""
    from cnnclf.data.check import SMALL_CLASS
    from cnnclf.model.transfer import small_data_advice

    if found.smallest >= SMALL_CLASS:
        return False, f"{found.smallest}+ images a class are enough to train from scratch"
    color = "grayscale" if found.grayscale else "rgb"
    advice = small_data_advice([side, side], color)
    if "too small" in advice:  # the advice's first clause says which side is too small
        return False, f"from scratch: {advice.split(':')[0]}"
    if found.grayscale:
        return False, (
            f"from scratch: {found.smallest} images a class is few, but grayscale images gain "
            "less from an ImageNet backbone (model.init_from: a bundle of similar images helps)"
        )
    if found.weights not in ("cache", "fetchable"):
        return False, (
            f"from scratch: {found.smallest} images a class wants a pretrained backbone, but "
            f"{BACKBONE}'s ImageNet weights are {found.weights}"
        )
    where = "in Keras' cache" if found.weights == "cache" else "downloaded once by train"
    return True, (
        f"under {SMALL_CLASS} images a class a pretrained backbone does much better "
        f"({found.smallest} in the smallest); its ImageNet weights are {where}"
    )


def choose(found: Survey, out_dir: Path) -> Plan:
    """The config for `found`, each key with its reason; paths relative to `out_dir`."""
    plan = Plan()
    _data_choices(plan, found, out_dir)
    backbone, why = use_backbone(found, image_side(min(found.median_size), False))
    side = image_side(min(found.median_size), backbone)
    plan.set(
        "data.image_size",
        [side, side],
        f"{BACKBONE}'s own resolution"
        if backbone
        else f"typical image {found.median_size[0]}x{found.median_size[1]}; "
        "multiple of 8 in [16, 64]",
    )
    plan.set("data.color_mode", "grayscale" if found.grayscale else "rgb", _color_why(found))
    plan.set("data.batch_size", 32, "Keras' default; small enough for CPU memory")
    _augment_choices(plan, found, backbone)
    _model_choices(plan, backbone, side, why)
    _train_choices(plan, found, backbone)
    plan.summary += [
        f"{len(found.counts)} classes, {sum(found.counts.values())} training images "
        f"({found.smallest}-{max(found.counts.values())} a class), "
        f"{'test set ' + found.test_dir if found.test_dir else 'no test set'}",
        f"images: typically {found.median_size[0]}x{found.median_size[1]} "
        f"{'grayscale' if found.grayscale else 'colour'} ({found.sampled} sampled); "
        f"left-right asymmetry {found.asymmetry:.2f}",
        f"model: {'backbone ' + BACKBONE if backbone else 'from-scratch CNN'}: {why}",
    ]
    return plan


def _color_why(found: Survey) -> str:
    if found.grayscale:
        return "every sampled image has one channel"
    return "the sampled images have colour channels"


def _data_choices(plan: Plan, found: Survey, out_dir: Path) -> None:
    plan.set("data.train_dir", _relative(found.train_dir, out_dir), "found by init")
    if found.test_dir:
        plan.set(
            "data.test_dir",
            _relative(found.test_dir, out_dir),
            "the test set validates each epoch",
        )
    else:
        plan.set("data.test_dir", None, "no test set found: validation_split holds some out")
        plan.set("data.validation_split", 0.2, "20% of each class held out for validation (seeded)")


def _augment_choices(plan: Plan, found: Survey, backbone: bool) -> None:
    if not backbone:
        plan.set("augment.rescale", "1/255", "pixels to [0, 1] inside the model")
    flip = found.asymmetry < FLIP_LIMIT
    plan.set(
        "augment.horizontal_flip",
        flip,
        f"left-right asymmetry {found.asymmetry:.2f} of the class mean images is "
        f"{'below' if flip else 'at or above'} {FLIP_LIMIT}: "
        + ("mirrored images look like the data" if flip else "oriented data (text, scans)"),
    )
    plan.set("augment.vertical_flip", False, "photos and scans have an up; never suggested")
    small = found.smallest < 200
    shift = 0.1 if small else 0.0
    plan.set(
        "augment.width_shift_range",
        shift,
        "few images a class: small shifts add variety" if small else "enough images: none",
    )
    plan.set("augment.height_shift_range", shift, "as width_shift_range")


def _model_choices(plan: Plan, backbone: bool, side: int, why: str) -> None:
    if backbone:
        plan.set("model.backbone", {"name": BACKBONE, "weights": "imagenet"}, why)
        plan.set("model.dense_units", [], "the backbone's pooled features feed the output")
        plan.set("model.dropout", 0.0, "no hidden layer to drop from")
        return
    blocks = [{"filters": 32, "kernel_size": 3, "pool_size": 2}]
    blocks.append({"filters": 64, "kernel_size": 3, "pool_size": 2})
    if side >= 48:
        blocks.append({"filters": 128, "kernel_size": 3, "pool_size": 2})
    plan.set(
        "model.conv_blocks",
        blocks,
        f"{why}; blocks as configs/recommended.yaml"
        + (", one more for images of 48 px and over" if side >= 48 else ""),
    )
    plan.set("model.padding", "same", "keeps the feature maps' size through each convolution")
    plan.set("model.pooling", "flatten", "keeps where features are")
    plan.set("model.dense_units", [128], "one hidden layer")
    plan.set("model.dropout", 0.5, "the Dense layer holds most weights and overfits first")


def _train_choices(plan: Plan, found: Survey, backbone: bool) -> None:
    plan.set("train.epochs", 10 if backbone else 20, "an upper bound: early stopping ends sooner")
    plan.set("train.seed", 1337, "one seed for weights, shuffling and the validation split")
    plan.set("train.optimizer", "adam", "forgiving of the learning rate")
    plan.set(
        "train.learning_rate",
        0.001,
        "Adam's default; auto runs cnnclf lr-find first and uses its suggestion",
    )
    imbalanced = found.ratio >= IMBALANCE_RATIO
    plan.set(
        "train.class_weight",
        "balanced" if imbalanced else "none",
        f"largest/smallest class {found.ratio:.2f} is "
        f"{'at or above' if imbalanced else 'below'} {IMBALANCE_RATIO}",
    )
    if len(found.counts) == 2:
        plan.set(
            "train.threshold",
            "youden" if imbalanced else 0.5,
            "imbalanced: chosen on the validation data to balance sensitivity and specificity"
            if imbalanced
            else f"balanced classes (ratio below {IMBALANCE_RATIO}): the middle",
        )
    plan.set(
        "train.early_stopping",
        {"monitor": "val_loss", "patience": 5, "restore_best_weights": True},
        "stop after 5 epochs without a better validation loss",
    )
    plan.set("train.keep_best", "val_loss", "the bundle keeps the best epoch's weights")
    if backbone:
        plan.set(
            "train.fine_tune",
            {"epochs": 5, "unfreeze": 20, "learning_rate": 1.0e-5},
            "then the top 20 backbone layers at a low rate, from the best head",
        )
    else:
        plan.set("train.lr_schedule", "cosine", "large steps early, fine ones at the end")


def _relative(path: str, out_dir: Path) -> str:
    """`path` as the config file in `out_dir` should hold it (config paths resolve from the
    file's folder)."""
    try:
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))
    except ValueError:  # another drive (Windows)
        return os.path.abspath(path)
    # Beside or one folder up (configs/ next to data/) travels with the project; further is
    # clearer absolute.
    return relative if not relative.startswith(os.path.join("..", "..")) else os.path.abspath(path)


def render(plan: Plan, data_dir: str | Path) -> str:
    """The commented YAML: a header, then each section's keys with their reasons."""
    lines = [
        f"# Written by `cnnclf init {data_dir}`: a starting point chosen from the data.",
        "# Each key says why it was chosen; every other key keeps its default",
        "# (cnnclf config --reference lists them all). Validate with cnnclf config --config FILE.",
    ]
    sections: dict[str, list[Choice]] = {}
    for choice in plan.choices:  # each section once, in the order first set
        sections.setdefault(choice.key.split(".", 1)[0], []).append(choice)
    for name, choices in sections.items():
        lines += ["", f"{name}:"]
        for choice in choices:
            comment = f"  # {choice.why}" if choice.why else ""
            key = choice.key.split(".", 1)[1]
            lines.append(f"  {key}: {_yaml_value(choice.value)}{comment}")
    return "\n".join(lines) + "\n"


def _yaml_value(value: object) -> str:
    """A value on one line: JSON's syntax is YAML's flow syntax, and strings stay unquoted
    where YAML reads them back as the same string."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = f"{value:.10g}"  # PyYAML reads 1e-05 as a string: it needs 1.0e-05
        return text if "e" not in text or "." in text else text.replace("e", ".0e", 1)
    if isinstance(value, str):
        plain = value.replace("/", "").replace("_", "").replace(".", "").replace("-", "")
        return value if plain.isalnum() and not value[0].isdigit() else json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return str(value)


def write_config(text: str, out: Path, overwrite: bool) -> None:
    """Writes `text` to `out`; refuses to replace a file unless asked (one line)."""
    if out.exists() and not overwrite:
        raise ConfigError(f"--out: {out} exists; choose another file or add --overwrite")
    if out.is_dir():
        raise ConfigError(f"--out: {out} is a folder; give a file name like {out}/config.yaml")
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, out)
