"""Running exported models (TFLite, ONNX, SavedModel) behind the interface predict uses.

An export carries the same sidecar facts as a bundle (class names, preprocessing, threshold) in a
small JSON beside it, so `cnnclf predict --model model.tflite` decodes images with the same
`images.load_image` and reads labels the same way as with the Keras bundle.

Sidecars: for a file `model.tflite` (or `.onnx`): `model.tflite.labels.txt` and
`model.tflite.cnnclf.json` beside it (named after the whole file name, so `model.onnx` and
`model.tflite` in one folder keep separate sidecars); for a SavedModel folder: `labels.txt` and
`cnnclf.json` inside it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from cnnclf.errors import BundleError

EXPORT_SUFFIXES = {".tflite": "tflite", ".onnx": "onnx"}


def sidecar_paths(path: Path) -> tuple[Path, Path]:
    """(labels file, JSON) for an exported model at `path`."""
    path = Path(path)
    if path.suffix in EXPORT_SUFFIXES:
        return path.with_name(path.name + ".labels.txt"), path.with_name(path.name +
                                                                         ".cnnclf.json")
    return path / "labels.txt", path / "cnnclf.json"


def is_export(path: Path) -> bool:
    path = Path(path)
    return (path.is_file() and path.suffix in EXPORT_SUFFIXES) or (
        path.is_dir() and (path / "saved_model.pb").exists())


class TFLiteModel:
    """TFLite interpreter with `predict_on_batch`; input resized to the batch on first use."""

    def __init__(self, path: Path):
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            self.interpreter = tf.lite.Interpreter(model_path=str(path))
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        from cnnclf.runtime import quiet_native_stderr

        with quiet_native_stderr():
            if self.batch != len(x):
                self.interpreter.resize_tensor_input(self.input["index"], list(x.shape))
                self.interpreter.allocate_tensors()
                self.batch = len(x)
            self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
            self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output["index"]), dtype=np.float32)


class OnnxModel:
    """ONNX Runtime session with `predict_on_batch`."""

    def __init__(self, path: Path):
        try:
            import onnxruntime
        except ImportError:
            raise BundleError(f"--model {path}: running ONNX models needs onnxruntime: pip "
                              "install 'cnnclf[onnx]'") from None
        self.session = onnxruntime.InferenceSession(str(path),
                                                    providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x.astype(np.float32)})[0])


class SavedModel:
    """A SavedModel's `serve` endpoint with `predict_on_batch`."""

    def __init__(self, path: Path):
        import tensorflow as tf

        self.module = tf.saved_model.load(str(path))

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.module.serve(x.astype(np.float32)))


def load_runtime(path: Path, fmt: str):
    return {"tflite": TFLiteModel, "onnx": OnnxModel, "savedmodel": SavedModel}[fmt](path)


def load_export(path: Path):
    """A `bundle.Bundle` for an exported model, read from its sidecars."""
    from cnnclf.bundle import Bundle, Preprocessing

    path = Path(path)
    labels_path, json_path = sidecar_paths(path)
    if not json_path.is_file():
        raise BundleError(f"--model {path}: no {json_path.name} beside it: export with "
                          "cnnclf export, which writes the labels and preprocessing")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        preprocessing = Preprocessing.from_json(meta["preprocessing"])
        class_indices = meta["class_indices"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"--model {path}: damaged {json_path.name} ({exc})") from None
    names = sorted(class_indices, key=class_indices.get)
    return Bundle(path, load_runtime(path, meta["format"]), names, preprocessing, meta)
