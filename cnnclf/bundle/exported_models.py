"""Running exported models (TFLite, ONNX, SavedModel) behind the interface predict uses.

An export carries the same sidecar facts as a bundle (class names, preprocessing, threshold) in a
small JSON beside it, so `cnnclf predict --model model.tflite` decodes images with the same
`data.decode.load_image` and reads labels the same way as with the Keras bundle.

Sidecars: for a file `model.tflite` (or `.onnx`): `model.tflite.labels.txt` and
`model.tflite.cnnclf.json` beside it (named after the whole file name, so `model.onnx` and
`model.tflite` in one folder keep separate sidecars); for a SavedModel folder: `labels.txt` and
`cnnclf.json` inside it.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from pathlib import Path

import numpy as np

from cnnclf.errors import BundleError

EXPORT_SUFFIXES = {".tflite": "tflite", ".onnx": "onnx"}


def sidecar_paths(path: Path) -> tuple[Path, Path]:
    """(labels file, JSON) for an exported model at `path`."""
    path = Path(path)
    if path.suffix in EXPORT_SUFFIXES:
        return path.with_name(path.name + ".labels.txt"), path.with_name(path.name + ".cnnclf.json")
    return path / "labels.txt", path / "cnnclf.json"


def is_export(path: Path) -> bool:
    path = Path(path)
    return (path.is_file() and path.suffix in EXPORT_SUFFIXES) or (
        path.is_dir() and (path / "saved_model.pb").exists()
    )


FORMATS = ("tflite", "onnx", "savedmodel")
QUANTIZATIONS = ("none", "float16", "int8")


class TFLiteModel:
    """TFLite interpreter with `predict_on_batch`; input resized to the batch on first use.

    The standalone LiteRT runtime (`ai-edge-litert`) is used when installed: it starts in a
    fraction of TensorFlow's import time. TensorFlow's own `tf.lite.Interpreter` otherwise.
    """

    def __init__(self, path: Path):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            from cnnclf.tf_loader import import_tensorflow

            _note_tensorflow_fallback(path)
            Interpreter = import_tensorflow().lite.Interpreter
            _parse_tflite(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
                self.interpreter = Interpreter(model_path=str(path))
        except (ValueError, RuntimeError) as exc:
            raise _damaged(path, "a TFLite", exc) from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_shape = _dims(self.input["shape_signature"][1:])
        self.output_units = _dims(self.output["shape_signature"][-1:])[0]
        self.batch: int | None = None

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        from cnnclf.tf_loader import quiet_native_stderr

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
            raise BundleError(
                f"--model {path}: running ONNX models needs onnxruntime: pip install 'cnnclf[onnx]'"
            ) from None
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail)
            raise _damaged(path, "an ONNX", exc) from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = _dims(model_input.shape[1:])
        self.output_units = _dims(self.session.get_outputs()[0].shape[-1:])[0]

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x.astype(np.float32)})[0])


class SavedModel:
    """A SavedModel's `serve` endpoint with `predict_on_batch`."""

    def __init__(self, path: Path):
        from cnnclf.tf_loader import import_tensorflow

        tf = import_tensorflow()
        try:
            self.module = tf.saved_model.load(str(path))
            spec = self.module.serve.input_signature[0]
            outputs = list(self.module.signatures["serve"].structured_outputs.values())
        except Exception as exc:  # TensorFlow raises many types for a damaged SavedModel
            raise _damaged(path, "a SavedModel", exc) from None
        self.input_shape = _dims(spec.shape[1:])
        self.output_units = _dims(outputs[0].shape[-1:])[0] if len(outputs) == 1 else None

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.module.serve(x.astype(np.float32)))


class Renormalised:
    """A softmax export whose rows are rescaled to sum to 1.

    Quantized softmax outputs (int8 steps of 1/256) sum to 0.99-1.01, not 1: every consumer
    that checks for probabilities (scikit-learn's multi-class ROC AUC, `predict`'s JSON)
    would see a model that is not a classifier. Rows further from 1 than quantization explains
    are left as they are, so a real fault still shows.
    """

    def __init__(self, runtime):
        self.runtime = runtime

    def __getattr__(self, name):
        return getattr(self.runtime, name)

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return renormalise(np.asarray(self.runtime.predict_on_batch(x), np.float32))


def renormalise(probs: np.ndarray) -> np.ndarray:
    """Rescales rows of [N, K] probabilities within K/256 of summing to 1 to sum exactly to 1."""
    sums = probs.sum(axis=1, keepdims=True)
    close = np.abs(sums - 1.0) <= probs.shape[1] / 256.0
    return np.where(close & (sums > 0), probs / np.where(sums > 0, sums, 1.0), probs)


def load_runtime(path: Path, fmt: str):
    return {"tflite": TFLiteModel, "onnx": OnnxModel, "savedmodel": SavedModel}[fmt](path)


def load_export(path: Path):
    """A `bundle.Bundle` for an exported model, read from its sidecars and checked against it.

    Raises:
        BundleError: one line, `--model PATH: FILE: what is wrong`.
    """
    from cnnclf.bundle import (
        Bundle,
        Preprocessing,
        SidecarError,
        check_model_shapes,
        class_names_from_json,
        read_json,
    )

    path = Path(path)
    labels_path, json_path = sidecar_paths(path)
    if not json_path.is_file():
        raise BundleError(
            f"--model {path}: no {json_path.name} beside it: export with "
            "cnnclf export, which writes the labels and preprocessing"
        )
    key = None
    try:
        meta = read_json(json_path)
        if not isinstance(meta, dict):
            raise SidecarError("must be a JSON object")
        for key in ("format", "preprocessing", "class_indices"):
            if key not in meta:
                raise SidecarError("missing")
        key = "format"
        fmt = EXPORT_SUFFIXES.get(path.suffix, "savedmodel")
        if meta["format"] != fmt:
            raise SidecarError(f"must be {fmt!r} for {path.name}, got {meta['format']!r}")
        key = "quantize"
        if meta.get("quantize", "none") not in QUANTIZATIONS:
            raise SidecarError(
                f"must be one of {', '.join(QUANTIZATIONS)}, got {meta['quantize']!r}"
            )
        key = "source_bundle"
        if not isinstance(meta.get("source_bundle"), (str, type(None))):
            raise SidecarError("must be a folder path or null")
        key = "preprocessing"
        preprocessing = Preprocessing.from_json(meta["preprocessing"])
        key = "class_indices"
        names = class_names_from_json(meta["class_indices"], preprocessing.class_mode)
    except SidecarError as exc:
        where = f"{key}: " if key else ""
        raise BundleError(f"--model {path}: {json_path.name}: {where}{exc}") from None
    if labels_path.is_file():
        labels = labels_path.read_text(encoding="utf-8", errors="replace").split("\n")
        if [line.strip() for line in labels if line.strip()] != names:
            raise BundleError(
                f"--model {path}: {labels_path.name}: does not list the classes "
                f"of {json_path.name} ({', '.join(names)}) in index order"
            )
    runtime = load_runtime(path, fmt)
    check_model_shapes(
        path,
        path.name,
        preprocessing,
        names,
        runtime.input_shape,
        runtime.output_units,
        preprocessing_file=f"{json_path.name}: preprocessing",
        class_indices_file=f"{json_path.name}: class_indices",
    )
    if preprocessing.class_mode == "categorical":
        runtime = Renormalised(runtime)
    return Bundle(path, runtime, names, preprocessing, meta)


def _dims(shape) -> tuple:
    """Static sizes as ints, unknown ones (-1, None, 'unk__3') as None."""
    return tuple(
        int(d) if isinstance(d, (int, np.integer)) and d >= 0 else None
        for d in (getattr(shape, "as_list", lambda: shape)())
    )


def _note_tensorflow_fallback(path: Path) -> None:
    """Says in one line, before TensorFlow loads, why a .tflite model is slow to start.

    Silent when TensorFlow is loaded already (an export's parity check) or not installed
    (then `TensorFlowMissing` names both runtimes).
    """
    if "tensorflow" in sys.modules or not importlib.util.find_spec("tensorflow"):
        return
    logging.getLogger("cnnclf").warning(
        "note: ai-edge-litert is not installed, so %s runs on TensorFlow (slower to start): "
        "pip install 'cnnclf[litert]'",
        path.name,
    )


def _parse_tflite(path: Path) -> None:
    """Parses a .tflite file in Python before TensorFlow's interpreter opens it.

    Why: TensorFlow's tf.lite.Interpreter (2.21) does not verify the flatbuffer and dies with
    a segmentation fault or bus error on a truncated file; LiteRT's verifies it and raises.
    """
    try:
        from tensorflow.lite.tools import flatbuffer_utils
    except ImportError:
        return
    try:
        flatbuffer_utils.read_model(str(path))
    except Exception as exc:  # struct.error, IndexError, ...: an offset outside the file
        raise _damaged(path, "a TFLite", exc) from None


def _damaged(path: Path, kind: str, exc: Exception) -> BundleError:
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    line = line if len(line) <= 200 else line[:200] + "..."
    return BundleError(f"--model {path}: {path.name}: damaged or not {kind} model ({line})")
