"""Training: from a validated config to a published bundle.

Everything that can fail on the user's input (the config, the folder layout, the destination)
is checked before TensorFlow is imported, so a typo costs milliseconds, not an import and a
half-built pipeline.
"""

from __future__ import annotations

import logging
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from cnnclf import __version__
from cnnclf.bundle import (BUNDLE_FORMAT, CLASS_INDICES_FILE, CONFIG_FILE, CURVES_FILE,
                           HISTORY_FILE, MANIFEST_FILE, METRICS_FILE, MODEL_FILE,
                           PREPROCESSING_FILE, BundleWriter, Preprocessing, check_destination,
                           write_json)
from cnnclf.config import Config
from cnnclf.files import Dataset, discover
from cnnclf.images import ImageSpec
from cnnclf.runs import new_run_dir

log = logging.getLogger("cnnclf")


@dataclass(frozen=True)
class TrainResult:
    bundle_dir: Path
    history: dict
    skipped: dict
    seconds: float


def resolve_paths(config: Config) -> Config:
    """Makes data paths absolute, so the saved config still works from another directory."""
    import dataclasses

    data = config.data
    absolute = {k: str(Path(v).resolve()) for k in ("train_dir", "test_dir")
                if (v := getattr(data, k)) is not None}
    return dataclasses.replace(config, data=dataclasses.replace(data, **absolute))


def image_spec(config: Config) -> ImageSpec:
    return ImageSpec(tuple(config.data.image_size), config.data.color_mode,
                     config.data.interpolation)


def train(config: Config, *, out_dir: str | Path | None = None,
          config_path: str | Path | None = None, overwrite: bool = False,
          verbose: bool = False, progress: int | str = "auto") -> TrainResult:
    """Trains a model as `config` says and writes its bundle.

    Args:
        config: a validated `Config`.
        out_dir: the bundle folder; None = a new folder under `runs/` named after `config_path`.
        config_path: the config file's path, used only to name the run folder.
        overwrite: allow replacing a non-empty `out_dir` (atomically, after training succeeds).
        verbose: let TensorFlow's own logging through.
        progress: Keras `fit` verbosity (`auto`: a progress bar on a terminal, a line per epoch
            otherwise).

    Returns:
        A `TrainResult` with the published bundle's path and the history.
    """
    started = time.monotonic()
    config = resolve_paths(config)
    dataset = discover(config.data, config.train.seed)
    destination = Path(out_dir) if out_dir is not None else new_run_dir(config_path)
    check_destination(destination, overwrite)
    from cnnclf.model import loss_for

    loss = loss_for(config, len(dataset.class_names))  # a config error: before TensorFlow
    _describe(dataset)

    from cnnclf.runtime import import_tensorflow, quiet_keras_warnings, seed_everything

    import_tensorflow(verbose)
    if not verbose:
        quiet_keras_warnings()
    seed_everything(config.train.seed, config.train.deterministic)

    with BundleWriter(destination, overwrite=overwrite) as writer, \
            tempfile.TemporaryDirectory(prefix="cnnclf-cache-") as cache_dir:
        model, history, skipped, val_ds = _fit(config, dataset, loss, Path(cache_dir), progress)
        _warn_skipped(skipped)
        threshold, metrics = _validate(model, val_ds, config, dataset)
        seconds = time.monotonic() - started
        _write_bundle(writer.staging, model, config, dataset, history, skipped, config_path,
                      seconds, threshold, metrics)
        bundle_dir = writer.publish()
    log.info("saved bundle to %s", bundle_dir)
    return TrainResult(bundle_dir, history, skipped, seconds)


def _describe(dataset: Dataset) -> None:
    train_counts = dataset.train.counts(dataset.class_names)
    val_counts = dataset.validation.counts(dataset.class_names)
    log.info("classes: %s", ", ".join(f"{name} ({train_counts[name]} train, {val_counts[name]} "
                                      f"val)" for name in dataset.class_names))
    if dataset.validation_source == "validation_split":
        log.info("validation: %d images held out of data.train_dir (data.validation_split)",
                 len(dataset.validation))


def _fit(config: Config, dataset: Dataset, loss: str, cache_dir: Path, progress):
    import keras

    from cnnclf.augment import is_active, make_augmenter
    from cnnclf.model import build_model, make_optimizer
    from cnnclf.pipeline import SkippedFiles, choose_cache, make_dataset

    spec = image_spec(config)
    n_classes = len(dataset.class_names)
    skipped = SkippedFiles()
    augmenter = (make_augmenter(config.augment, spec.image_size)
                 if is_active(config.augment) else None)
    common = dict(spec=spec, n_classes=n_classes, batch_size=config.data.batch_size,
                  seed=config.train.seed, skipped=skipped)
    train_cache = choose_cache(config.data.cache, len(dataset.train), spec,
                               config.data.cache_memory_mb)
    val_cache = choose_cache(config.data.cache, len(dataset.validation), spec,
                             config.data.cache_memory_mb)
    train_ds = make_dataset(dataset.train.paths, dataset.train.labels, training=True,
                            cache=train_cache, cache_path=str(cache_dir / "train"),
                            shuffle_buffer=config.data.shuffle_buffer, augmenter=augmenter,
                            **common)
    val_ds = make_dataset(dataset.validation.paths, dataset.validation.labels, training=False,
                          cache=val_cache, cache_path=str(cache_dir / "validation"), **common)

    model = build_model(config, n_classes, spec.channels)
    model.compile(optimizer=make_optimizer(config), loss=loss, metrics=["accuracy"])
    log.info("model: %s parameters; %d epochs of batch %d; cache: %s",
             f"{model.count_params():,}", config.train.epochs, config.data.batch_size,
             train_cache)
    if progress == "auto":
        progress = 1 if sys.stdout.isatty() else 2
    fitted = model.fit(train_ds, validation_data=val_ds, epochs=config.train.epochs,
                       shuffle=False, verbose=progress,
                       callbacks=[keras.callbacks.TerminateOnNaN()])
    history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
    history["epoch"] = [i + 1 for i in range(len(next(iter(fitted.history.values()), [])))]
    return model, history, dict(skipped.reasons), val_ds


def _validate(model, val_ds, config: Config, dataset: Dataset) -> tuple[float | None, dict]:
    """Chooses the binary threshold (per train.threshold) and evaluates on validation data."""
    import numpy as np

    from cnnclf.errors import DataError
    from cnnclf.metrics import classification_metrics
    from cnnclf.thresholds import choose_threshold

    labels, scores = [], []
    for images, batch_labels in val_ds:
        scores.append(np.asarray(model.predict_on_batch(images)))
        labels.append(np.asarray(batch_labels))
    probs = np.concatenate(scores)
    y = np.concatenate(labels)
    binary = len(dataset.class_names) == 2
    if binary:
        probs, y = probs[:, 0], y[:, 0].astype(int)
        try:
            threshold = choose_threshold(y, probs, config.train.threshold)
        except ValueError as exc:
            raise DataError(f"train.threshold: {exc}") from None
        if isinstance(config.train.threshold, str):
            log.info("threshold: %.4f chosen by %s on the validation data",
                     threshold, config.train.threshold)
    else:
        y, threshold = y.argmax(axis=1), None
    metrics = classification_metrics(y, probs, dataset.class_names, threshold)
    return threshold, metrics


def _validation_folder(config: Config, dataset: Dataset) -> str:
    return config.data.test_dir if dataset.validation_source == "test_dir" \
        else config.data.train_dir


def _warn_skipped(skipped: dict) -> None:
    if not skipped:
        return
    listed = "; ".join(f"{path} ({reason})" for path, reason in sorted(skipped.items())[:10])
    more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    log.warning("warning: skipped %d unreadable image(s), listed in bundle.json: %s%s",
                len(skipped), listed, more)


def _write_bundle(folder: Path, model, config: Config, dataset: Dataset, history: dict,
                  skipped: dict, config_path, seconds: float, threshold: float | None,
                  metrics: dict) -> None:
    import keras
    import tensorflow as tf

    from cnnclf import plots

    model.save(folder / MODEL_FILE)
    write_json(folder / CLASS_INDICES_FILE, dataset.class_indices)
    binary = len(dataset.class_names) == 2
    preprocessing = Preprocessing(image_spec(config), config.augment.rescale,
                                  "binary" if binary else "categorical",
                                  threshold if binary else None)
    write_json(folder / PREPROCESSING_FILE, preprocessing.to_json())
    (folder / CONFIG_FILE).write_text(
        yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None),
        encoding="utf-8")
    write_json(folder / HISTORY_FILE, history)
    validation_folder = _validation_folder(config, dataset)
    threshold_record = ({"rule": config.train.threshold, "value": threshold,
                         "chosen_on": validation_folder} if binary else None)
    note = ("the threshold was chosen on this same validation data, so sensitivity and "
            "specificity are optimistic; run cnnclf evaluate on other data for unbiased figures"
            if binary and isinstance(config.train.threshold, str) else None)
    write_json(folder / METRICS_FILE, {"data": dataset.validation_source,
                                       "data_dir": validation_folder, **metrics,
                                       **({"note": note} if note else {})})
    plots.training_curves(history, folder / CURVES_FILE)
    final = {k: v[-1] for k, v in history.items() if k != "epoch" and v}
    write_json(folder / MANIFEST_FILE, {
        "format": BUNDLE_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cnnclf_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
        "config_file": str(Path(config_path).resolve()) if config_path else None,
        "class_names": dataset.class_names,
        "train_images": dataset.train.counts(dataset.class_names),
        "validation_images": dataset.validation.counts(dataset.class_names),
        "validation_source": dataset.validation_source,
        "epochs": len(history.get("epoch", [])),
        "final_metrics": final,
        "threshold": threshold_record,
        "skipped_files": [{"path": p, "reason": r} for p, r in sorted(skipped.items())],
        "train_seconds": round(seconds, 2),
    })
