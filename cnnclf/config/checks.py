"""Field checkers: one per kind of value a config key can hold.

Each checker takes (dotted key, raw value) and returns the normalised value, or raises a
one-line `ConfigError` naming the key, what is allowed and what was given. They know nothing
of the schema, so the schema (schema.py, sections.py) can attach them to fields and every error
reads the same. `setting()` is how a field carries its default, checker and help text.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
from collections.abc import Callable
from dataclasses import field
from typing import Any, NoReturn

from cnnclf.errors import ConfigError

# A checker: (dotted key, raw value) -> the normalised value, or raises ConfigError.
Checker = Callable[[str, Any], Any]


def setting(
    default: Any,
    check: Checker | None,
    help: str,
    *,
    kind: str | None = None,
    required: str | Callable[[], str] | None = None,
    sub_section: type | None = None,
) -> Any:
    """A dataclass field whose metadata carries its checker and the help text the reference
    config is made from.

    `required` (the words after "is required") marks a key without default. `sub_section`
    (a dataclass from subsections.py) marks a value that is a typed mapping, or a list of
    them when the default is a list: parse.py checks it field by field instead of `check`.
    """
    meta = {
        "check": check,
        "help": help,
        "kind": kind,
        "required": required,
        "sub_section": sub_section,
        "many": isinstance(default, list),
    }
    if required is not None:
        return field(metadata=meta)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


# Checkers: each takes (dotted key, raw value) and returns the normalised value or raises
# ConfigError naming the key, what is allowed and what was given.


def fail(key: str, allowed: str, value: Any) -> NoReturn:
    raise ConfigError(f"{key}: must be {allowed}, got {shown(value)}")


def shown(value: Any, limit: int = 100) -> str:
    """`repr(value)`, shortened: an error stays one readable line whatever was passed."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def key_name(name: Any) -> str:
    """A key as errors print it: as written, unless that would break or flood the line."""
    text = str(name)
    return text if text.isprintable() and len(text) <= 60 else shown(text, 60)


def finite(value: Any) -> float | None:
    """`value` as a finite float, or None for anything else (bools, strings, inf, nan, 1e400)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return value if math.isfinite(value) else None


def integer(minimum: int | None = None, maximum: int | None = None) -> Checker:
    def check(key: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(key, _int_words(minimum, maximum), value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            fail(key, _int_words(minimum, maximum), value)
        return value

    return check


def _int_words(minimum: int | None, maximum: int | None) -> str:
    if minimum == 1 and maximum is None:
        return "a positive integer"
    if minimum == 0 and maximum is None:
        return "a non-negative integer"
    return f"an integer in [{minimum}, {maximum}]"


def number(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    open_min: bool = False,
    open_max: bool = False,
) -> Checker:
    lo = "(" if open_min else "["
    hi = ")" if open_max else "]"
    words = (
        f"a number in {lo}{minimum}, {maximum}{hi}"
        if maximum is not None
        else (f"a finite number {'>' if open_min else '>='} {minimum}")
    )

    def check(key: str, raw: Any) -> Any:
        value = finite(raw)
        if value is None:
            fail(key, words, raw)
        if minimum is not None and (value < minimum or (open_min and value == minimum)):
            fail(key, words, raw)
        if maximum is not None and (value > maximum or (open_max and value == maximum)):
            fail(key, words, raw)
        return value

    return check


def boolean(key: str, value: Any) -> Any:
    if not isinstance(value, bool):
        fail(key, "true or false", value)
    return value


def choice(*choices: str) -> Checker:
    def check(key: str, value: Any) -> Any:
        if value not in choices:
            fail(key, "one of " + ", ".join(repr(c) for c in choices), value)
        return value

    return check


def auto_or_int(minimum: int, maximum: int) -> Checker:
    def check(key: str, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            fail(key, f"auto or an integer in [{minimum}, {maximum}]", value)
        return value

    return check


def auto_or_bool(key: str, value: Any) -> Any:
    if value != "auto" and not isinstance(value, bool):
        fail(key, "auto, true or false", value)
    return value


def learning_rate(key: str, value: Any) -> Any:
    """A rate in (0, 10], or auto: the learning-rate finder chooses it (training/lr_find.py)."""
    if value == "auto":
        return value
    try:
        return number(0, 10, open_min=True)(key, value)
    except ConfigError:
        fail(key, "auto or a number in (0, 10]", value)


def optional_number(minimum: float) -> Checker:
    positive = number(minimum, None, open_min=True)

    def check(key: str, value: Any) -> Any:
        if value is None:
            return None
        try:
            return positive(key, value)
        except ConfigError:
            fail(key, f"null or a number > {minimum}", value)

    return check


def optional_path(key: str, value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        fail(key, "a folder path (string) or null", value)
    return value


# What data.train_dir and data.test_dir accept besides a folder (data/label_files.py reads
# them; config may not import data, so the suffixes are repeated here).
LABEL_FILE_SUFFIXES = (".csv", ".jsonl")


def data_path(key: str, value: Any) -> Any:
    """A folder of class folders, or a label file (.csv, .jsonl); refuses any other file."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        fail(key, "a folder or label file (.csv, .jsonl) path (string) or null", value)
    if os.path.isfile(value) and not value.lower().endswith(LABEL_FILE_SUFFIXES):
        raise ConfigError(
            f"{key}: {value} is a file, not a folder; a label file ends in .csv or .jsonl"
        )
    return value


# Upper bounds on sizes: past them a model cannot be built or trained on any machine we know of,
# and without them the failure comes only after TensorFlow has loaded (MemoryError or
# ResourceExhaustedError). The memory estimate (memory.py) catches what is fine alone but not
# together.
MAX_IMAGE_SIDE = 8192
MAX_UNITS = 65536  # filters per convolution, units per Dense layer
MAX_BATCH_SIZE = 65536
MAX_SEED = 2**32 - 1  # what NumPy's and TensorFlow's seeding accept


def image_size(key: str, value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or any(
            isinstance(v, bool) or not isinstance(v, int) or not 8 <= v <= MAX_IMAGE_SIDE
            for v in value
        )
    ):
        fail(key, f"[height, width] with integers in [8, {MAX_IMAGE_SIDE}]", value)
    return [int(value[0]), int(value[1])]


_FRACTION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


def rescale(key: str, value: Any) -> Any:
    """Accepts the tutorial's `1./255` written as a string (YAML has no arithmetic)."""
    if isinstance(value, str):
        match = _FRACTION.match(value)
        if not match or float(match.group(2)) == 0:
            fail(key, "a number or a fraction like '1/255'", value)
        value = float(match.group(1)) / float(match.group(2))
    # 255 * 255 still fits float16, the narrowest precision mixed_precision: auto computes in.
    return number(0, 255, open_min=True)(key, value)


def zoom_range(key: str, value: Any) -> Any:
    """ImageDataGenerator semantics: z means zoom factors drawn from [1 - z, 1 + z]."""
    if isinstance(value, (list, tuple)):
        pair = [finite(v) for v in value]
        if len(pair) != 2 or pair[0] is None or pair[1] is None or not 0 < pair[0] <= pair[1]:
            fail(key, "a number in [0, 1) or [low, high] with 0 < low <= high (finite)", value)
        return pair
    return number(0, 1, open_max=True)(key, value)


def shift_range(key: str, value: Any) -> Any:
    """ImageDataGenerator semantics: < 1 is a fraction of the side, >= 1 a number of pixels."""
    return number(0, None)(key, value)


def brightness_range(key: str, value: Any) -> Any:
    if value is None:
        return None
    pair = [finite(v) for v in value] if isinstance(value, (list, tuple)) else []
    if len(pair) != 2 or pair[0] is None or pair[1] is None or not 0 <= pair[0] <= pair[1]:
        fail(key, "null or [low, high] brightness factors with 0 <= low <= high (finite)", value)
    return pair


def dense_units(key: str, value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        fail(key, "a list of positive integers (hidden Dense layer sizes), possibly empty", value)
    return [integer(1, MAX_UNITS)(f"{key}[{i}]", v) for i, v in enumerate(value)]


def threshold(key: str, value: Any) -> Any:
    from cnnclf.inference.thresholds import is_rule

    if isinstance(value, str):
        if not is_rule(value):
            fail(
                key,
                "a number in (0, 1) or a rule: youden, f1, recall>=0.95, specificity>=0.9",
                value,
            )
        return value.replace(" ", "")
    return number(0, 1, open_min=True, open_max=True)(key, value)


# auc and val_auc: multi-label models only (training refuses them on a single-label run).
MONITORS = ("val_loss", "val_accuracy", "loss", "accuracy", "val_auc", "auc")


def optional_monitor(key: str, value: Any) -> Any:
    if value is None:
        return None
    return choice(*MONITORS)(key, value)


def class_weight(key: str, value: Any) -> Any:
    if value in ("none", None):
        return "none"
    if value == "balanced":
        return value
    if not isinstance(value, dict) or not value:
        fail(key, "none, balanced, or a mapping {class name: weight}", value)
    return {
        str(name): number(0, None, open_min=True)(f"{key}.{key_name(name)}", weight)
        for name, weight in value.items()
    }


def backbone_name(key: str, value: Any) -> Any:
    from cnnclf.model.backbones import BACKBONES, names

    if not isinstance(value, str) or value not in BACKBONES:
        hint = difflib.get_close_matches(str(value), list(BACKBONES), n=1)
        raise ConfigError(
            f"{key}: unknown backbone {shown(value)}"
            + (f"; did you mean {hint[0]!r}?" if hint else f"; use one of {names()}")
        )
    return value


def backbone_weights(key: str, weights: Any) -> Any:
    """imagenet, none (null reads as none), or a Keras weights file, which must exist now."""
    if weights is None:
        weights = "none"
    if not isinstance(weights, str) or not weights.strip():
        fail(key, "imagenet, none, or the path of a .h5 / .weights.h5 file", weights)
    if weights in ("imagenet", "none"):
        return weights
    weights = os.path.expanduser(weights)
    if not weights.endswith(".h5"):
        raise ConfigError(
            f"{key}: {weights} is not a .h5 or .weights.h5 file; give "
            "a Keras weights file, imagenet or none"
        )
    if not os.path.isfile(weights):
        raise ConfigError(
            f"{key}: {weights} does not exist (or is not a file); "
            "give the path of a .h5 / .weights.h5 file, imagenet or none"
        )
    return weights


def unfreeze(key: str, value: Any) -> Any:
    if value == "all":
        return value
    if isinstance(value, str):
        fail(key, "all or a number of top layers (at least 1)", value)
    return integer(1)(key, value)


# tune: search ranges and choices (cnnclf tune).


def search_range(minimum: float, maximum: float, *, positive: bool = False) -> Checker:
    """null (the key is not tuned) or [low, high] with minimum <= low <= high <= maximum."""
    words = f"null or [low, high] with {'0 <' if positive else f'{minimum:g} <='} low <= high"
    words += f" <= {maximum:g}"

    def check(key: str, value: Any) -> Any:
        if value is None:
            return None
        pair = [finite(v) for v in value] if isinstance(value, (list, tuple)) else []
        if len(pair) != 2 or pair[0] is None or pair[1] is None:
            fail(key, words, value)
        low, high = pair
        if low > high or low < minimum or high > maximum or (positive and low <= 0):  # type: ignore[operator]
            fail(key, words, value)
        return pair

    return check


def int_choices(maximum: int) -> Checker:
    """A list of distinct positive integers to choose among; [] = not tuned."""

    def check(key: str, value: Any) -> Any:
        if not isinstance(value, list):
            fail(key, f"a list of distinct integers from 1 to {maximum} ([] = not tuned)", value)
        items = [integer(1, maximum)(f"{key}[{i}]", v) for i, v in enumerate(value)]
        if len(set(items)) != len(items):
            fail(key, "a list of distinct integers ([] = not tuned)", value)
        return items

    return check


def backbone_choices(key: str, value: Any) -> Any:
    if not isinstance(value, list):
        fail(key, "a list of backbone names ([] = keep model.backbone)", value)
    return [backbone_name(f"{key}[{i}]", v) for i, v in enumerate(value)]
