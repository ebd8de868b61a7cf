"""The model bundle: what a trained model is saved as, and how it is written and read back.

A bundle is a folder that `predict` needs nothing else to use:

    model.keras            the Keras model (Rescaling inside, no augmentation layers)
    class_indices.json     class name -> output index, as Keras' `class_indices`
    preprocessing.json     image_size, color_mode, interpolation, rescale, class_mode, threshold
    config.yaml            the resolved config the model was trained with
    history.json           per-epoch training and validation metrics
    metrics.json           the final evaluation on the validation data (see metrics.py)
    training_curves.png    loss and accuracy by epoch, training against validation
    bundle.json            versions, data counts, skipped files, timings; written last

Bundles are written atomically: `rundir.RunDir` builds them in the run's hidden staging folder and
renames them into place only when complete, so an interrupted run never leaves a half-written
bundle behind that `predict` would load. `bundle.json` doubles as the "complete" marker.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from cnnclf.data.decode import ImageSpec
from cnnclf.errors import BundleError

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

# What a sidecar may hold; the same choices config.py offers for training.
IMAGE_SIZE_RANGE = (8, 8192)  # beyond 8192 px a single decoded image is hundreds of MB
COLOR_MODES = ("rgb", "grayscale")
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "lanczos")
CLASS_MODES = ("binary", "categorical")


class SidecarError(ValueError):
    """A sidecar JSON field that is missing, of the wrong type or out of range.

    The message starts with the field's name; callers prefix the model path and the file.
    """


@dataclass(frozen=True)
class Preprocessing:
    """What prediction must repeat, read from the bundle instead of asked of the user."""

    spec: ImageSpec
    rescale: float
    class_mode: str  # "binary" (1 sigmoid unit) | "categorical" (softmax)
    threshold: float | None  # binary models only

    def to_json(self) -> dict:
        return {
            "image_size": list(self.spec.image_size),
            "color_mode": self.spec.color_mode,
            "interpolation": self.spec.interpolation,
            "rescale": self.rescale,
            "rescale_in_model": True,
            "class_mode": self.class_mode,
            "threshold": self.threshold,
        }

    @classmethod
    def from_json(cls, data) -> Preprocessing:
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
        if class_mode == "categorical" and threshold is not None:
            raise SidecarError(
                f"threshold: must be null for class_mode 'categorical' (only "
                f"binary models have a decision threshold), got "
                f"{_short(threshold)}"
            )
        spec = ImageSpec((size[0], size[1]), color_mode, interpolation)
        return cls(
            spec, float(rescale), class_mode, None if threshold is None else float(threshold)
        )


def class_names_from_json(data, class_mode: str) -> list[str]:
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
    names = sorted(data, key=data.get)
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


def read_json(path: Path):
    """Parses a sidecar; a key given twice is an error (json.loads would keep the last)."""

    def unique(pairs):
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise SidecarError(f"key {repeated[0]!r} appears more than once")
        return dict(pairs)

    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique)
    except SidecarError:
        raise
    except UnicodeDecodeError:
        raise SidecarError("not UTF-8 text") from None
    except OSError as exc:
        raise SidecarError(f"cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise SidecarError(f"not valid JSON ({exc})") from None


def _choice(data: dict, key: str, allowed: tuple[str, ...]) -> str:
    value = data[key]
    if value not in allowed or not isinstance(value, str):
        raise SidecarError(
            f"{key}: must be one of {', '.join(repr(a) for a in allowed)}, got {_short(value)}"
        )
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), "a number")


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: the Keras model and everything needed to feed and read it."""

    path: Path
    model: object
    class_names: list[str]
    preprocessing: Preprocessing
    manifest: dict


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def is_bundle(path: Path) -> bool:
    return all((Path(path) / name).is_file() for name in REQUIRED_FILES)


def read_metadata(path: str | Path) -> tuple[list[str], Preprocessing, dict]:
    """Reads and checks a bundle's JSON sidecars without loading the model (no TensorFlow).

    Raises:
        BundleError: one line, `--model PATH: FILE: what is wrong`.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"--model {path}: no such folder")
    if not path.is_dir():
        raise BundleError(
            f"--model {path}: is a file; pass the bundle folder that holds {MODEL_FILE}"
        )
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise BundleError(
            f"--model {path}: not a complete cnnclf bundle (missing {', '.join(missing)})"
        )
    with _sidecar(path, MANIFEST_FILE):
        manifest = read_json(path / MANIFEST_FILE)
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
    with _sidecar(path, PREPROCESSING_FILE):
        preprocessing = Preprocessing.from_json(read_json(path / PREPROCESSING_FILE))
    with _sidecar(path, CLASS_INDICES_FILE):
        names = class_names_from_json(
            read_json(path / CLASS_INDICES_FILE), preprocessing.class_mode
        )
    recorded = manifest.get("class_names")
    if recorded is not None and recorded != names:
        raise BundleError(
            f"--model {path}: {CLASS_INDICES_FILE}: classes {_short(names)} "
            f"differ from those {MANIFEST_FILE} recorded at training, "
            f"{_short(recorded)}"
        )
    return names, preprocessing, manifest


def load_bundle(path: str | Path) -> Bundle:
    """Loads a bundle for prediction. Keras' safe mode stays on: no arbitrary code on load.

    The sidecars are checked first, then the model against them (input shape against
    image_size and color_mode, output units against class_mode and the class count).
    """
    path = Path(path)
    class_names, preprocessing, manifest = read_metadata(path)
    model = _load_keras_model(path)
    input_shape = model.input_shape
    if isinstance(input_shape, list):
        input_shape = input_shape[0] if len(input_shape) == 1 else None
    check_model_shapes(
        path,
        MODEL_FILE,
        preprocessing,
        class_names,
        None if input_shape is None else tuple(input_shape[1:]),
        model.output_shape[-1] if isinstance(model.output_shape, tuple) else None,
    )
    return Bundle(path, model, class_names, preprocessing, manifest)


def check_model_shapes(
    path: Path,
    model_name: str,
    preprocessing: Preprocessing,
    class_names: list[str],
    input_shape,
    output_units,
    *,
    preprocessing_file: str = PREPROCESSING_FILE,
    class_indices_file: str = CLASS_INDICES_FILE,
) -> None:
    """Refuses sidecars that disagree with the model they describe.

    Args:
        path: the --model path, for the message.
        model_name: the model file's name (model.keras, model.onnx, ...).
        input_shape: the model's (height, width, channels), None entries for any size; None
            when the runtime cannot tell.
        output_units: the size of the model's output; None when the runtime cannot tell.
        preprocessing_file, class_indices_file: the files to name in the message (an export
            keeps both in one JSON).
    """
    expected = preprocessing.spec.shape
    if input_shape is not None and (
        len(input_shape) != 3
        or any(m is not None and int(m) != e for m, e in zip(input_shape, expected))
    ):
        raise BundleError(
            f"--model {path}: {preprocessing_file}: image_size "
            f"{list(preprocessing.spec.image_size)} with color_mode "
            f"'{preprocessing.spec.color_mode}' gives inputs of shape {expected}, but "
            f"{model_name} takes {tuple(input_shape)}"
        )
    if output_units is None:
        return
    if preprocessing.class_mode == "binary" and output_units != 1:
        raise BundleError(
            f"--model {path}: {preprocessing_file}: class_mode 'binary' needs a "
            f"model with 1 output unit, but {model_name} has {output_units}"
        )
    if preprocessing.class_mode == "categorical" and output_units == 1:
        raise BundleError(
            f"--model {path}: {preprocessing_file}: class_mode 'categorical' "
            f"needs one output unit per class, but {model_name} has 1 (a binary "
            "model: class_mode 'binary')"
        )
    if preprocessing.class_mode == "categorical" and output_units != len(class_names):
        raise BundleError(
            f"--model {path}: {class_indices_file}: lists {len(class_names)} "
            f"classes, but {model_name} has {output_units} output unit(s)"
        )


def _load_keras_model(path: Path):
    """model.keras, with a damaged file or a safe-mode refusal said in one line."""
    import zipfile

    model_file = path / MODEL_FILE
    # Only the zip's directory is read here (a truncated file has none); Keras reads the rest.
    try:
        with zipfile.ZipFile(model_file) as archive:
            damaged = None if "config.json" in archive.namelist() else "no config.json in it"
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        damaged = str(exc) or type(exc).__name__
    if damaged:
        raise BundleError(
            f"--model {path}: {MODEL_FILE}: damaged or not a Keras model file "
            f"({damaged}); copy the bundle again or retrain"
        )
    from cnnclf.tf_loader import import_tensorflow

    import_tensorflow()
    import keras

    try:
        return keras.saving.load_model(model_file, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a file it cannot rebuild.
        reason = _first_line(exc)
        if "safe_mode" in str(exc) or "unsafe" in str(exc):
            # Keras explains how to turn safe mode off; cnnclf never does, so keep the what.
            raise BundleError(
                f"--model {path}: {MODEL_FILE}: refused by Keras safe mode: "
                f"{reason.split('. ')[0].rstrip('.')}; cnnclf loads only "
                "models that need no custom code"
            ) from None
        raise BundleError(f"--model {path}: {MODEL_FILE}: cannot be loaded ({reason})") from None


def _first_line(exc: Exception, limit: int = 200) -> str:
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return line if len(line) <= limit else line[:limit] + "..."


@contextlib.contextmanager
def _sidecar(path: Path, name: str):
    """Turns a SidecarError raised while checking file `name` into the one-line BundleError."""
    try:
        yield
    except SidecarError as exc:
        raise BundleError(f"--model {path}: {name}: {exc}") from None
