"""`cnnclf export`: SavedModel, TFLite (float, float16, int8) and ONNX, each checked for parity.

Every export is run with its own runtime (TF SavedModel loader, TFLite interpreter, ONNX
Runtime) on real images decoded by `data.decode.load_image` and compared with the Keras model before
the command succeeds; nothing is written to `--out` unless the check passes.
Float exports must match within 1e-4 on every probability; quantized ones (float16, int8) must
predict the same label on at least 99% of the sample.

Augmentation never lives in the model (see augment.py), so the exported graph holds only
rescaling and the network: no random ops at serving time, no Flex ops for TFLite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnclf import __version__
from cnnclf.bundle import CONFIG_FILE, Bundle
from cnnclf.bundle.exported_models import load_runtime, sidecar_paths
from cnnclf.data.decode import load_image
from cnnclf.data.label_files import existing_rows, is_label_file, read_label_file
from cnnclf.data.listing import list_images
from cnnclf.errors import CnnclfError, ConfigError

FLOAT_TOLERANCE = 1e-4
LABEL_AGREEMENT = 0.99


def sample_images(bundle: Bundle, data_dir: str | Path | None, n: int, seed: int = 0):
    """Decoded images for parity checks and int8 calibration: DATA_DIR or the bundle's data."""
    folders = [Path(data_dir)] if data_dir else _bundle_data_folders(bundle)
    paths = [p for folder in folders for p in _images_in(folder)]
    if not paths:
        where = data_dir or "the bundle's data.train_dir/test_dir"
        raise ConfigError(
            f"--data: no images found in {where}; pass --data DIR with a few "
            "images like the ones the model will see"
        )
    random.Random(seed).shuffle(paths)
    arrays = []
    for path in paths:
        try:
            arrays.append(load_image(path, bundle.preprocessing.spec))
        except CnnclfError:
            continue
        if len(arrays) == n:
            break
    return np.stack(arrays).astype(np.float32)


def _images_in(source: Path) -> list[str]:
    """The images of a class-folder tree, or those a label file lists (its problems are
    check-data's business: a sample only needs some images that exist)."""
    if source.is_dir():
        return list_images(source)
    if not is_label_file(source) or not source.is_file():
        return []
    try:
        return [row.path for row in existing_rows(read_label_file(source, "--data"))[0]]
    except CnnclfError:
        return []


def _bundle_data_folders(bundle: Bundle) -> list[Path]:
    import yaml

    try:
        data = yaml.safe_load((Path(bundle.path) / CONFIG_FILE).read_text())["data"]
    except (OSError, KeyError, TypeError):
        return []
    return [Path(p) for p in (data.get("test_dir"), data.get("train_dir")) if p]


def check_out(fmt: str, out: str | Path, quantize: str = "none", overwrite: bool = False) -> None:
    """Refuses an --out / --format / --quantize combination before any model is loaded."""
    if quantize != "none" and fmt != "tflite":
        raise ConfigError(f"--quantize {quantize}: only tflite exports can be quantized")
    check_extras(fmt)
    out = Path(out)
    if fmt != "savedmodel" and out.suffix != f".{fmt}":
        raise ConfigError(f"--out {out}: a {fmt} export's file name must end in .{fmt}")
    if (fmt == "savedmodel" and out.is_file()) or (fmt != "savedmodel" and out.is_dir()):
        raise ConfigError(
            f"--out {out}: exists and is a {'file' if out.is_file() else 'folder'};"
            f" a {fmt} export is a {'folder' if fmt == 'savedmodel' else 'file'}"
        )
    existing = [p for p in (out, *sidecar_paths(out)) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"--out {out}: {existing[0]} already exists; choose another path or "
            "pass --overwrite to replace it"
        )


def check_extras(fmt: str) -> None:
    """Refuses an export whose converter or runtime is not installed, before TensorFlow loads.

    Why `find_spec` and not an import: importing tf2onnx imports TensorFlow, which takes most
    of a minute on a cold start; the answer "pip install" should not.
    """
    if fmt != "onnx":
        return
    missing = [name for name in ("tf2onnx", "onnxruntime") if not importlib.util.find_spec(name)]
    if missing:
        raise CnnclfError(
            f"--format onnx needs tf2onnx (to convert) and onnxruntime (for the parity "
            f"check); {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
            "installed: pip install 'cnnclf[onnx]'"
        )


def export(
    bundle: Bundle,
    fmt: str,
    out: str | Path,
    *,
    quantize: str = "none",
    data_dir: str | Path | None = None,
    sample_size: int = 64,
    overwrite: bool = False,
) -> dict:
    """Exports `bundle` to `out`, checks it, and returns the parity figures.

    The export is built in a hidden folder beside `out` and moved into place with renames on
    the same file system, so an existing export is replaced (with `overwrite`) only by a
    complete, checked one.

    Args:
        bundle: a Keras bundle from `bundle.load_bundle`.
        fmt: savedmodel | tflite | onnx.
        out: a folder (savedmodel) or a file path (tflite, onnx).
        quantize: none | float16 | int8 (tflite only).
        data_dir: images for the parity sample and int8 calibration (default: bundle's data).
        overwrite: replace an existing export at `out`.
    """
    check_out(fmt, out, quantize, overwrite)
    _check_onnx_backbone(bundle, fmt)
    out = Path(out)
    sample = sample_images(bundle, data_dir, sample_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=f".{out.name}.", suffix=".partial", dir=out.parent
    ) as tmp:
        staged = Path(tmp) / out.name
        model: Any = bundle.model  # a keras.Model
        if fmt == "savedmodel":
            model.export(str(staged), format="tf_saved_model", verbose=False)
        elif fmt == "tflite":
            staged.write_bytes(_tflite(model, Path(tmp), quantize, sample))
        else:
            _onnx(model, staged, sample)
        parity = check_parity(bundle, load_runtime(staged, fmt), sample, quantize)
        meta: dict[str, Any] = {
            "format": fmt,
            "quantize": quantize,
            "cnnclf_version": __version__,
            "source_bundle": str(Path(bundle.path).resolve()),
            "class_indices": {n: i for i, n in enumerate(bundle.class_names)},
            "preprocessing": bundle.preprocessing.to_json(),
            "input": {
                "shape": [None, *bundle.preprocessing.spec.shape],
                "dtype": "float32",
                "pixel_range": [0, 255],
            },
            "parity": parity,
        }
        from cnnclf.bundle.reader import trained_flips

        manifest = bundle.manifest if isinstance(bundle.manifest, dict) else {}
        calibration = manifest.get("calibration")
        if isinstance(calibration, dict):
            # What the exported weights were calibrated with (T is folded into them) and what
            # --tta rescales by: read from here, not from a source bundle that may change.
            meta["calibration"] = calibration
        meta["tta_flips"] = list(trained_flips(bundle))  # the views --tta may use
        labels, sidecar = sidecar_paths(staged)
        labels.write_text("\n".join(bundle.class_names) + "\n", encoding="utf-8")
        sidecar.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        final_labels, final_sidecar = sidecar_paths(out)
        if fmt == "savedmodel":
            _replace_folder(staged, out, Path(tmp))
        else:
            for source, target in ((labels, final_labels), (sidecar, final_sidecar), (staged, out)):
                os.replace(source, target)  # the model file last: it marks "done"
    return {**parity, "out": str(out), "labels": str(final_labels), "sidecar": str(final_sidecar)}


def _replace_folder(staged: Path, out: Path, tmp: Path) -> None:
    """Moves folder `staged` to `out`; an existing `out` is moved aside first, then deleted."""
    if out.exists():
        os.replace(out, tmp / "replaced")  # removed with tmp
    os.replace(staged, out)


def _tflite(model, tmp: Path, quantize: str, sample: np.ndarray) -> bytes:
    import tensorflow as tf

    saved = tmp / "savedmodel-for-tflite"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

        def representative():
            for image in sample:
                yield [image[None]]

        converter.representative_dataset = representative
    from cnnclf.tf_loader import quiet_native_stderr

    with quiet_native_stderr():  # the converter prints "fully_quantize: 0, ..." to fd 2
        return converter.convert()


def _check_onnx_backbone(bundle: Bundle, fmt: str) -> None:
    """Refuses an ONNX export tf2onnx is known to fail on, in one line, before converting."""
    from cnnclf.model.backbones import NO_ONNX

    manifest = bundle.manifest if isinstance(bundle.manifest, dict) else {}
    start = manifest.get("start")
    start = start if isinstance(start, dict) else {}
    backbone = start.get("backbone")
    backbone = backbone if isinstance(backbone, dict) else {}
    name = backbone.get("name")
    if fmt == "onnx" and name in NO_ONNX:
        raise CnnclfError(
            f"--format onnx: not available for a {name} backbone "
            f"({NO_ONNX[name]}); export --format tflite or savedmodel instead"
        )


def _onnx(model, path: Path, sample: np.ndarray) -> None:
    # tf2onnx, which Keras' exporter imports, was checked for by `check_out`.
    model.predict_on_batch(sample[:1])  # Keras' ONNX exporter traces a model already called
    import warnings

    with warnings.catch_warnings():
        # Keras' tf2onnx shim probes `np.object`, which NumPy 2 answers with a FutureWarning
        # meant for Keras' developers, not for whoever exports a model.
        warnings.simplefilter("ignore", FutureWarning)
        model.export(str(path), format="onnx", verbose=False)


def check_parity(bundle: Bundle, runtime, sample: np.ndarray, quantize: str) -> dict:
    """Runs the export's own runtime against the Keras model on the same images."""
    model: Any = bundle.model  # a keras.Model
    batch = 16
    keras_out, export_out = [], []
    for start in range(0, len(sample), batch):
        x = sample[start : start + batch]
        keras_out.append(np.asarray(model.predict_on_batch(x), np.float32))
        export_out.append(
            np.asarray(runtime.predict_on_batch(x), np.float32).reshape(keras_out[-1].shape)
        )
    a, b = np.concatenate(keras_out), np.concatenate(export_out)
    threshold = bundle.preprocessing.threshold or 0.5
    cuts = np.asarray(bundle.preprocessing.thresholds or [0.5] * len(bundle.class_names))

    def labels(p):
        # Multi-label: every (image, class) decision against its own threshold counts once,
        # so label_agreement is the share of those decisions the export makes the same.
        if bundle.preprocessing.multi_label:
            return (p >= cuts).astype(int).reshape(-1)
        return (p[:, 0] >= threshold).astype(int) if p.shape[1] == 1 else p.argmax(axis=1)

    figures: dict[str, Any] = {
        "images": len(a),
        "max_abs_diff": float(np.abs(a - b).max()),
        "label_agreement": float((labels(a) == labels(b)).mean()),
    }
    if quantize == "none":
        figures["criterion"] = f"max_abs_diff <= {FLOAT_TOLERANCE}"
        ok = figures["max_abs_diff"] <= FLOAT_TOLERANCE
    else:
        figures["criterion"] = f"label_agreement >= {LABEL_AGREEMENT}"
        ok = figures["label_agreement"] >= LABEL_AGREEMENT
    if not ok:
        raise CnnclfError(
            f"export failed its parity check on {len(a)} images "
            f"(max |diff| {figures['max_abs_diff']:.2e}, label agreement "
            f"{figures['label_agreement']:.1%}; needs {figures['criterion']}); "
            "nothing was written"
        )
    return figures
