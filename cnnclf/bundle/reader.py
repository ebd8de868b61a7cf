"""Reading a bundle back: its sidecars checked against the schema, then the model against them.

Bundles are written atomically: `rundir.RunDir` builds them in the run's hidden staging folder
and renames them into place only when complete, so an interrupted run never leaves a
half-written bundle behind that `predict` would load. `bundle.json` doubles as the "complete"
marker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnclf.bundle.archive import ArchiveError, check_model_archive
from cnnclf.bundle.format import (
    CLASS_INDICES_FILE,
    CONFIG_FILE,
    DIGESTED_FILES,
    MANIFEST_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    REQUIRED_FILES,
    Preprocessing,
    SidecarError,
    check_manifest,
    check_recorded_classes,
    check_recorded_digest,
    class_names_from_json,
    parse_json,
    read_json,
    read_sidecar,
)
from cnnclf.errors import BundleError


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: the Keras model and everything needed to feed and read it."""

    path: Path
    model: Any  # a keras.Model; typed loosely so this module never imports Keras
    class_names: list[str]
    preprocessing: Preprocessing
    manifest: dict


def is_bundle(path: Path) -> bool:
    return all((Path(path) / name).is_file() for name in REQUIRED_FILES)


def read_metadata(path: str | Path) -> tuple[list[str], Preprocessing, dict]:
    """Reads and checks a bundle's JSON sidecars and model.keras's zip directory without
    loading the model (no TensorFlow), so a hostile bundle is refused before TensorFlow's
    seconds of import, and `serve` refuses it before binding anything.

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
        check_manifest(manifest)
    data = {}
    with _sidecar(path, PREPROCESSING_FILE):
        data[PREPROCESSING_FILE] = read_sidecar(path / PREPROCESSING_FILE)
        preprocessing = Preprocessing.from_json(parse_json(data[PREPROCESSING_FILE]))
    with _sidecar(path, CLASS_INDICES_FILE):
        data[CLASS_INDICES_FILE] = read_sidecar(path / CLASS_INDICES_FILE)
        names = class_names_from_json(
            parse_json(data[CLASS_INDICES_FILE]), preprocessing.class_mode
        )
        check_recorded_classes(names, manifest)
    # Last, so that a malformed sidecar is named by what is wrong in it, not only as edited.
    for name in DIGESTED_FILES:
        with _sidecar(path, name):
            check_recorded_digest(name, data[name], manifest)
    try:
        check_model_archive(path / MODEL_FILE, manifest.get("params"))
    except ArchiveError as exc:
        raise BundleError(f"--model {path}: {MODEL_FILE}: {exc}") from None
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
    input_shape: Sequence[int | None] | None,
    output_units: int | None,
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
    thresholds = preprocessing.thresholds
    if preprocessing.multi_label and thresholds is not None and len(thresholds) != len(class_names):
        raise BundleError(
            f"--model {path}: {preprocessing_file}: {len(thresholds)} thresholds for "
            f"{len(class_names)} classes; a multi-label model has one per class"
        )
    if preprocessing.class_mode != "binary" and output_units != len(class_names):
        raise BundleError(
            f"--model {path}: {class_indices_file}: lists {len(class_names)} "
            f"classes, but {model_name} has {output_units} output unit(s)"
        )


def _load_keras_model(path: Path) -> Any:
    """model.keras, its zip already checked by `read_metadata`, with a safe-mode refusal or
    any other failure to rebuild it said in one line."""
    model_file = path / MODEL_FILE
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
def _sidecar(path: Path, name: str) -> Iterator[None]:
    """Turns a SidecarError raised while checking file `name` into the one-line BundleError."""
    try:
        yield
    except SidecarError as exc:
        raise BundleError(f"--model {path}: {name}: {exc}") from None


def trained_flips(bundle: Bundle) -> tuple[bool, bool]:
    """(horizontal_flip, vertical_flip) as the bundle's training config set them.

    Read from config.yaml of the bundle; an export keeps them in its sidecar (`tta_flips`;
    an export made before that: its source bundle's config.yaml). Without either, no flip: a
    view the model never saw in training could only cost accuracy.
    """
    import yaml

    kept = bundle.manifest.get("tta_flips") if isinstance(bundle.manifest, dict) else None
    if isinstance(kept, list) and len(kept) == 2 and all(isinstance(f, bool) for f in kept):
        return kept[0], kept[1]
    source = Path(bundle.manifest.get("source_bundle") or bundle.path)
    try:
        augment = (yaml.safe_load((source / CONFIG_FILE).read_text()) or {}).get("augment") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return False, False
    return augment.get("horizontal_flip") is True, augment.get("vertical_flip") is True
