"""The bundle's format in one place: its file names, its version, and the sidecar JSON schema.

A bundle is a folder that `predict` needs nothing else to use:

    model.keras            the Keras model (Rescaling inside, no augmentation layers)
    class_indices.json     class name -> output index, as Keras' `class_indices`
    preprocessing.json     image_size, color_mode, interpolation, rescale, class_mode, threshold
    config.yaml            the resolved config the model was trained with
    history.json           per-epoch training and validation metrics
    metrics.json           the final evaluation on the validation data (see metrics.py)
    training_curves.png    loss and accuracy by epoch, training against validation
    bundle.json            versions, data counts, skipped files, timings, the model's
                           parameter count and the sha256 of DIGESTED_FILES; written last

`writer.py` writes these files and `reader.py` reads and checks them; both take the names and
the schema from here, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnclf.data.decode import ImageSpec
from cnnclf.regular_file import FileTooLarge, NotRegularFile, read_regular_file

BUNDLE_FORMAT = 1
MODEL_FILE = "model.keras"
CLASS_INDICES_FILE = "class_indices.json"
PREPROCESSING_FILE = "preprocessing.json"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
CURVES_FILE = "training_curves.png"
MANIFEST_FILE = "bundle.json"
REQUIRED_FILES = (MODEL_FILE, CLASS_INDICES_FILE, PREPROCESSING_FILE, MANIFEST_FILE)
# The sidecars that decide what a prediction says: bundle.json records their sha256 when the
# bundle is written, so an edit (a consistent swap of two class indices) is refused, not obeyed.
DIGESTED_FILES = (CLASS_INDICES_FILE, PREPROCESSING_FILE)

# The most bytes a sidecar may hold, read before parsing: JSON costs several times its size in
# memory. class_indices.json for 50,000 classes is about 1.5 MB; bundle.json lists every skipped
# file (about 200 bytes each), so it gets more room.
SIDECAR_MAX_BYTES = 4_000_000
SIDECAR_LIMITS = {MANIFEST_FILE: 64_000_000}

# What a sidecar may hold; the same choices config.py offers for training.
IMAGE_SIZE_RANGE = (8, 8192)  # beyond 8192 px a single decoded image is hundreds of MB
COLOR_MODES = ("rgb", "grayscale")
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "lanczos")
# multi_label: one sigmoid per class. A cnnclf from before it refuses such a bundle (an unknown
# class_mode) instead of reading its outputs as softmax probabilities.
CLASS_MODES = ("binary", "categorical", "multi_label")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class SidecarError(ValueError):
    """A sidecar JSON field that is missing, of the wrong type or out of range.

    The message starts with the field's name; callers prefix the model path and the file.
    """


@dataclass(frozen=True)
class Preprocessing:
    """What prediction must repeat, read from the bundle instead of asked of the user."""

    spec: ImageSpec
    rescale: float
    class_mode: str  # "binary" (1 sigmoid unit) | "categorical" (softmax) | "multi_label"
    threshold: float | None  # binary models only
    # multi_label models only: one decision threshold per class, in class index order.
    thresholds: tuple[float, ...] | None = None

    @property
    def multi_label(self) -> bool:
        """One sigmoid per class; false for every bundle written before multi-label existed."""
        return self.class_mode == "multi_label"

    def to_json(self) -> dict:
        extra = {"thresholds": list(self.thresholds or ())} if self.multi_label else {}
        return {
            "image_size": list(self.spec.image_size),
            "color_mode": self.spec.color_mode,
            "interpolation": self.spec.interpolation,
            "rescale": self.rescale,
            "rescale_in_model": True,
            "class_mode": self.class_mode,
            "threshold": self.threshold,
            **extra,
        }

    @classmethod
    def from_json(cls, data: Any) -> Preprocessing:
        """Checks every field of a preprocessing.json object and builds the value.

        Raises:
            SidecarError: a field is missing, of the wrong type or out of range; the message
                starts with the field's name.
        """
        if not isinstance(data, dict):
            raise SidecarError(f"must be a JSON object, got {_json_type(data)}")
        for key in ("image_size", "color_mode", "interpolation", "rescale", "class_mode"):
            if key not in data:
                raise SidecarError(f"{key}: missing")
        size = data["image_size"]
        low, high = IMAGE_SIZE_RANGE
        if (
            not isinstance(size, list)
            or len(size) != 2
            or any(not _is_int(v) or not low <= v <= high for v in size)
        ):
            raise SidecarError(
                f"image_size: must be [height, width] with integers from {low} "
                f"to {high}, got {_short(size)}"
            )
        color_mode = _choice(data, "color_mode", COLOR_MODES)
        interpolation = _choice(data, "interpolation", INTERPOLATIONS)
        class_mode = _choice(data, "class_mode", CLASS_MODES)
        rescale = data["rescale"]
        if not _is_number(rescale) or not math.isfinite(rescale) or rescale <= 0:
            raise SidecarError(f"rescale: must be a finite number > 0, got {_short(rescale)}")
        if data.get("rescale_in_model", True) is not True:
            # Prediction feeds 0-255 pixels: a model without its Rescaling layer would misread them.
            raise SidecarError(
                f"rescale_in_model: must be true (cnnclf models rescale inside "
                f"the model), got {_short(data['rescale_in_model'])}"
            )
        threshold = data.get("threshold")
        if (
            class_mode == "binary"
            and threshold is not None
            and (not _is_number(threshold) or not 0 < threshold < 1)
        ):
            raise SidecarError(
                f"threshold: must be a number between 0 and 1 (exclusive) or "
                f"null, got {_short(threshold)}"
            )
        if class_mode != "binary" and threshold is not None:
            raise SidecarError(
                f"threshold: must be null for class_mode '{class_mode}' (only "
                f"binary models have a decision threshold), got "
                f"{_short(threshold)}"
            )
        thresholds = _thresholds(data, class_mode)
        spec = ImageSpec((size[0], size[1]), color_mode, interpolation)
        return cls(
            spec,
            float(rescale),
            class_mode,
            None if threshold is None else float(threshold),
            thresholds,
        )


def _thresholds(data: dict, class_mode: str) -> tuple[float, ...] | None:
    """A multi_label model's per-class `thresholds`, each in (0, 1]; absent otherwise."""
    values = data.get("thresholds")
    if class_mode != "multi_label":
        if values is not None:
            raise SidecarError(
                f"thresholds: only multi_label models have per-class thresholds, got "
                f"{_short(values)}"
            )
        return None
    if (
        not isinstance(values, list)
        or not values
        or any(not _is_number(v) or not 0 < v <= 1 for v in values)
    ):
        raise SidecarError(
            f"thresholds: must be a list of numbers in (0, 1], one per class, got {_short(values)}"
        )
    return tuple(float(v) for v in values)


def class_names_from_json(data: Any, class_mode: str) -> list[str]:
    """Class names in index order from a `class_indices` object, checked against `class_mode`.

    Raises:
        SidecarError: not an object of unique non-empty names mapping to 0..N-1, or a binary
            model without exactly 2 names.
    """
    if not isinstance(data, dict):
        raise SidecarError(f"must be a JSON object of class name -> index, got {_json_type(data)}")
    for name, index in data.items():
        if not name.strip():
            raise SidecarError(f"class names must be non-empty, got {name!r}")
        if not _is_int(index):
            raise SidecarError(f"{name}: index must be an integer, got {_short(index)}")
    names = sorted(data, key=lambda name: data[name])
    if [data[n] for n in names] != list(range(len(names))):
        raise SidecarError(
            f"indices must be 0..N-1, each used once, got {_short(sorted(data.values()))}"
        )
    if class_mode == "binary" and len(names) != 2:
        raise SidecarError(
            f"a binary model needs exactly 2 class names, got {len(names)} ({_short(names)})"
        )
    if len(names) < 2:
        raise SidecarError(f"needs at least 2 class names, got {_short(names)}")
    return names


def check_manifest(manifest: Any) -> None:
    """Checks what readers rely on in a bundle.json object.

    `class_names` is required: every format-1 bundle has recorded it since the first, and it is
    the cross-check of class_indices.json that no edit may switch off by deleting a key. `params`
    and `sha256` came later: a bundle without them is older, not damaged, and still loads.

    Raises:
        SidecarError: not an object, another bundle format, or a key of the wrong shape.
    """
    if not isinstance(manifest, dict):
        raise SidecarError(f"must be a JSON object, got {_json_type(manifest)}")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise SidecarError(
            f"bundle format {_short(manifest.get('format'))} is not "
            f"supported by this cnnclf (expects {BUNDLE_FORMAT})"
        )
    if not isinstance(manifest.get("threshold"), (dict, type(None))):
        raise SidecarError(
            f"threshold: must be an object or null, got {_short(manifest['threshold'])}"
        )
    names = manifest.get("class_names")
    if "class_names" not in manifest:
        raise SidecarError(
            "class_names: missing; every cnnclf bundle records its classes here, so this file "
            "was edited: restore the bundle from where it came from, or retrain"
        )
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SidecarError(f"class_names: must be a list of names, got {_short(names)}")
    params = manifest.get("params")
    if params is not None and (not _is_int(params) or params < 1):
        raise SidecarError(f"params: must be a positive integer or null, got {_short(params)}")
    digests = manifest.get("sha256")
    if digests is not None and (
        not isinstance(digests, dict)
        or not all(isinstance(d, str) and _SHA256.fullmatch(d) for d in digests.values())
    ):
        raise SidecarError(
            f"sha256: must map file names to 64 hex digits, or be null, got {_short(digests)}"
        )


def check_recorded_classes(names: list[str], manifest: dict) -> None:
    """Refuses class_indices.json classes other than those bundle.json recorded at training.

    Raises:
        SidecarError: the two lists differ.
    """
    recorded = manifest["class_names"]
    if recorded != names:
        raise SidecarError(
            f"classes {_short(names)} differ from those {MANIFEST_FILE} recorded at "
            f"training, {_short(recorded)}"
        )


def check_recorded_digest(name: str, data: bytes, manifest: dict) -> None:
    """Refuses sidecar `name` when bundle.json recorded another sha256 for it at training.

    This catches an edit or a damaged copy; it proves nothing about who made the bundle:
    whoever can change the sidecar can change bundle.json too.

    Raises:
        SidecarError: the digests differ.
    """
    recorded = (manifest.get("sha256") or {}).get(name)
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded.lower():
        raise SidecarError(
            f"is not the file written at training (its sha256 differs from the one "
            f"{MANIFEST_FILE} recorded): edited or damaged; restore the bundle or retrain"
        )


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, as bundle.json's `sha256` records it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_sidecar(path: Path, max_bytes: int | None = None) -> bytes:
    """A sidecar's bytes, refused unread past its cap (`SIDECAR_LIMITS`) or when not a file.

    Raises:
        SidecarError: too large, a FIFO or device, or unreadable.
    """
    path = Path(path)
    cap = max_bytes if max_bytes is not None else SIDECAR_LIMITS.get(path.name, SIDECAR_MAX_BYTES)
    try:
        return read_regular_file(path, cap)
    except (FileTooLarge, NotRegularFile) as exc:
        raise SidecarError(str(exc)) from None
    except OSError as exc:
        raise SidecarError(f"cannot be read ({exc.strerror or exc})") from None


def parse_json(data: bytes) -> Any:
    """Parses a sidecar's bytes; a key given twice is an error (json.loads would keep the last).

    Raises:
        SidecarError: not UTF-8, not JSON, a repeated key, or nested too deeply to parse.
    """

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise SidecarError(f"key {repeated[0]!r} appears more than once")
        return dict(pairs)

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=unique)
    except SidecarError:
        raise
    except UnicodeDecodeError:
        raise SidecarError("not UTF-8 text") from None
    except RecursionError:
        # `[` x 100,000 is 100 KB, well under the cap, and exhausts Python's recursion limit.
        raise SidecarError("not valid JSON for a sidecar (nested too deeply)") from None
    except ValueError as exc:
        raise SidecarError(f"not valid JSON ({exc})") from None


def read_json(path: Path, max_bytes: int | None = None) -> Any:
    """A sidecar read with its byte cap and parsed (see `read_sidecar`, `parse_json`)."""
    return parse_json(read_sidecar(path, max_bytes))


def _choice(data: dict, key: str, allowed: tuple[str, ...]) -> str:
    value = data[key]
    if value not in allowed or not isinstance(value, str):
        raise SidecarError(
            f"{key}: must be one of {', '.join(repr(a) for a in allowed)}, got {_short(value)}"
        )
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value: object) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), "a number")


def _short(value: object, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
