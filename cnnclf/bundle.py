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

Bundles are written atomically: everything goes into a hidden sibling folder that is renamed into
place only when complete, so an interrupted run never leaves a half-written bundle behind that
`predict` would load. `bundle.json` doubles as the "complete" marker for discovery.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from cnnclf.errors import BundleError, CnnclfError
from cnnclf.images import ImageSpec

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


@dataclass(frozen=True)
class Preprocessing:
    """What prediction must repeat, read from the bundle instead of asked of the user."""

    spec: ImageSpec
    rescale: float
    class_mode: str  # "binary" (1 sigmoid unit) | "categorical" (softmax)
    threshold: float | None  # binary models only

    def to_json(self) -> dict:
        return {"image_size": list(self.spec.image_size), "color_mode": self.spec.color_mode,
                "interpolation": self.spec.interpolation, "rescale": self.rescale,
                "rescale_in_model": True, "class_mode": self.class_mode,
                "threshold": self.threshold}

    @classmethod
    def from_json(cls, data: dict) -> "Preprocessing":
        spec = ImageSpec(tuple(data["image_size"]), data["color_mode"], data["interpolation"])
        return cls(spec, data["rescale"], data["class_mode"], data.get("threshold"))


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


def staging_dir(destination: Path) -> Path:
    """The hidden sibling where a bundle is built; a fixed name, so `--resume` can find it."""
    destination = Path(destination)
    return destination.parent / f".{destination.name}.partial"


class BundleWriter:
    """Stages a bundle in a hidden sibling folder and publishes it with one rename.

    Use as a context manager. On an exception (Ctrl-C included) the destination is untouched;
    the staging folder is kept only if it holds resumable progress, and removed otherwise.

    Args:
        destination: the bundle folder to publish.
        overwrite: allow replacing a non-empty destination.
        resume: continue in an existing staging folder instead of requiring a fresh one.
    """

    def __init__(self, destination: Path, *, overwrite: bool = False, resume: bool = False):
        self.destination = Path(destination)
        self.overwrite = overwrite
        self.resume = resume
        self.staging = staging_dir(self.destination)

    def __enter__(self) -> "BundleWriter":
        check_destination(self.destination, self.overwrite)
        if self.resume:
            if not self.staging.is_dir():
                raise BundleError(f"--resume: no interrupted run to resume for "
                                  f"{self.destination} (expected its state in {self.staging})")
        elif self.staging.exists():
            raise BundleError(f"--out {self.destination}: an interrupted run's state is in "
                              f"{self.staging}; add --resume to continue it, or delete that "
                              "folder to start over")
        else:
            self.staging.mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not (self.staging / "progress.json").exists():
            shutil.rmtree(self.staging, ignore_errors=True)

    def publish(self) -> Path:
        """Moves the staged bundle into place; an existing bundle is replaced only if allowed."""
        if not (self.staging / MANIFEST_FILE).exists():
            raise CnnclfError(f"internal: bundle staged in {self.staging} has no {MANIFEST_FILE}")
        old = None
        if self.destination.exists():
            check_destination(self.destination, self.overwrite)
            suffix = uuid.uuid4().hex[:8]
            old = self.destination.parent / f".{self.destination.name}.old-{suffix}"
            os.replace(self.destination, old)
        os.replace(self.staging, self.destination)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.destination


def check_destination(destination: Path, overwrite: bool) -> None:
    if destination.exists() and not destination.is_dir():
        raise BundleError(f"--out {destination}: exists and is not a folder")
    if destination.is_dir() and any(destination.iterdir()) and not overwrite:
        raise BundleError(f"--out {destination}: folder exists and is not empty; choose another "
                          "folder or pass --overwrite to replace it")


def is_bundle(path: Path) -> bool:
    return all((Path(path) / name).is_file() for name in REQUIRED_FILES)


def read_metadata(path: str | Path) -> tuple[list[str], Preprocessing, dict]:
    """Reads and checks a bundle's JSON sidecars without loading the model (no TensorFlow)."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"--model {path}: no such folder")
    if not path.is_dir():
        raise BundleError(f"--model {path}: is a file; pass the bundle folder that holds "
                          f"{MODEL_FILE}")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise BundleError(f"--model {path}: not a complete cnnclf bundle (missing "
                          f"{', '.join(missing)})")
    try:
        class_indices = json.loads((path / CLASS_INDICES_FILE).read_text(encoding="utf-8"))
        preprocessing = Preprocessing.from_json(
            json.loads((path / PREPROCESSING_FILE).read_text(encoding="utf-8")))
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"--model {path}: damaged bundle metadata ({exc})") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"--model {path}: bundle format {manifest.get('format')!r} is not "
                          f"supported by this cnnclf (expects {BUNDLE_FORMAT})")
    names = sorted(class_indices, key=class_indices.get)
    if [class_indices[n] for n in names] != list(range(len(names))):
        raise BundleError(f"--model {path}: {CLASS_INDICES_FILE} must map class names to "
                          "0..N-1")
    return names, preprocessing, manifest


def load_bundle(path: str | Path) -> Bundle:
    """Loads a bundle for prediction. Keras' safe mode stays on: no arbitrary code on load."""
    path = Path(path)
    class_names, preprocessing, manifest = read_metadata(path)
    from cnnclf.runtime import import_tensorflow

    import_tensorflow()
    import keras

    try:
        model = keras.saving.load_model(path / MODEL_FILE, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a damaged file.
        raise BundleError(f"--model {path}: {MODEL_FILE} cannot be loaded ({exc})") from None
    units = model.output_shape[-1]
    expected = 1 if preprocessing.class_mode == "binary" else len(class_names)
    if units != expected:
        raise BundleError(f"--model {path}: model has {units} outputs but {CLASS_INDICES_FILE} "
                          f"lists {len(class_names)} classes")
    return Bundle(path, model, class_names, preprocessing, manifest)
