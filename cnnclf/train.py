"""Training: from a validated config to a published bundle.

Everything that can fail on the user's input (the config, the folder layout, the destination)
is checked before TensorFlow is imported, so a typo costs milliseconds, not an import and a
half-built pipeline.
"""

from __future__ import annotations

import importlib.util
import json
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
from cnnclf.errors import BundleError, CnnclfError, ConfigError, Interrupted
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
          resume: bool = False, verbose: bool = False, device: str = "auto",
          progress: int | str = "auto") -> TrainResult:
    """Trains a model as `config` says and writes its bundle.

    Args:
        config: a validated `Config`.
        out_dir: the bundle folder; None = a new folder under `runs/` named after `config_path`.
        config_path: the config file's path, used only to name the run folder.
        overwrite: allow replacing a non-empty `out_dir` (atomically, after training succeeds).
        resume: continue an interrupted run into `out_dir` from its last completed epoch.
        device: cpu | gpu | auto (CUDA_VISIBLE_DEVICES is respected in every case).
        verbose: let TensorFlow's own logging through.
        progress: Keras `fit` verbosity (`auto`: a progress bar on a terminal, a line per epoch
            otherwise).

    Returns:
        A `TrainResult` with the published bundle's path and the history.
    """
    started = time.monotonic()
    config = resolve_paths(config)
    if resume and out_dir is None:
        raise ConfigError("--resume needs --out DIR: the folder the interrupted run was "
                          "writing (its state is in the hidden DIR.partial beside it)")
    dataset = discover(config.data, config.train.seed)
    destination = Path(out_dir) if out_dir is not None else new_run_dir(config_path)
    check_destination(destination, overwrite)
    from cnnclf.model import loss_for

    loss = loss_for(config, len(dataset.class_names))  # a config error: before TensorFlow
    if config.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard: needs the tensorboard package: pip install "
                          "'cnnclf[tensorboard]' (or set train.tensorboard: false)")
    class_weight = class_weights(config, dataset)
    previous = _check_resumable(destination, config) if resume else None

    from cnnclf.distribute import make_strategy, select_devices
    from cnnclf.runtime import import_tensorflow, quiet_keras_warnings, seed_everything

    tf = import_tensorflow(verbose)
    if not verbose:
        quiet_keras_warnings()
    select_devices(device)
    strategy, placement = make_strategy(config.train)
    seed_everything(config.train.seed, config.train.deterministic)
    log.info("%s", placement.describe())
    _describe(dataset, class_weight)

    scratch = tempfile.TemporaryDirectory(prefix="cnnclf-")
    if not placement.is_chief:
        # Other workers run the same steps (collective ops need everyone) but write to a
        # throw-away folder: only the chief publishes the bundle.
        destination, overwrite = Path(scratch.name) / "worker-bundle", False
    writer = BundleWriter(destination, overwrite=overwrite, resume=resume and placement.is_chief)
    try:
        with scratch, writer, tempfile.TemporaryDirectory(prefix="cnnclf-cache-") as cache_dir:
            model, history, skipped, val_ds, training = _fit(
                config, dataset, loss, Path(cache_dir), progress, writer.staging, previous,
                class_weight, strategy, placement)
            _warn_skipped(skipped)
            threshold, metrics = _validate(model, val_ds, config, dataset)
            seconds = time.monotonic() - started
            from cnnclf.checkpoint import remove_checkpoints

            remove_checkpoints(writer.staging)
            _write_bundle(writer.staging, model, config, dataset, history, skipped,
                          config_path, seconds, threshold, metrics, training)
            bundle_dir = writer.publish()
    except KeyboardInterrupt:
        from cnnclf.checkpoint import read_progress

        done = (read_progress(writer.staging) or {}).get("completed_epochs", 0)
        if done:
            raise Interrupted(f"interrupted after epoch {done} of {config.train.epochs}; "
                              f"its state is kept in {writer.staging}", destination,
                              done) from None
        raise Interrupted("interrupted before the first epoch finished: nothing to resume, "
                          "nothing was saved", destination, 0) from None
    except tf.errors.OpError as exc:
        if placement.strategy != "multi_worker":
            raise
        raise CnnclfError(f"multi_worker: lost contact with another worker "
                          f"({type(exc).__name__} in a collective operation); check that every "
                          "worker is running, then restart them all with --resume") from None
    if not placement.is_chief:
        log.info("worker done; the chief writes the bundle")
        return TrainResult(None, history, skipped, time.monotonic() - started)
    log.info("saved bundle to %s", bundle_dir)
    return TrainResult(bundle_dir, history, skipped, seconds)


def class_weights(config: Config, dataset: Dataset) -> dict[int, float] | None:
    """Keras `class_weight` (index -> weight) from train.class_weight."""
    choice = config.train.class_weight
    if choice == "none":
        return None
    counts = dataset.train.counts(dataset.class_names)
    if choice == "balanced":
        # As scikit-learn's "balanced": n_samples / (n_classes * n_samples_of_class).
        total, n = sum(counts.values()), len(counts)
        return {i: total / (n * counts[name]) for i, name in enumerate(dataset.class_names)}
    unknown = sorted(set(choice) - set(dataset.class_names))
    if unknown:
        raise ConfigError(f"train.class_weight: {', '.join(unknown)} is not a class "
                          f"(classes: {', '.join(dataset.class_names)})")
    return {i: float(choice.get(name, 1.0)) for i, name in enumerate(dataset.class_names)}


def _check_resumable(destination: Path, config: Config) -> dict:
    from cnnclf.bundle import staging_dir
    from cnnclf.checkpoint import read_progress

    staging = staging_dir(destination)
    progress = read_progress(staging) if staging.is_dir() else None
    if progress is None:
        raise BundleError(f"--resume: no interrupted run to resume for {destination} (no "
                          f"completed epoch saved in {staging})")
    saved, now = _flatten(progress["config"]), _flatten(config.to_dict())
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            raise ConfigError(f"--resume: {key} is {now.get(key)!r} but the interrupted run "
                              f"used {saved.get(key)!r}; resume with the same config and --set "
                              "options")
    return progress


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and prefix.count(".") < 1:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.loads(json.dumps(value))
    return flat


def _describe(dataset: Dataset, class_weight: dict | None) -> None:
    train_counts = dataset.train.counts(dataset.class_names)
    val_counts = dataset.validation.counts(dataset.class_names)
    log.info("classes: %s", ", ".join(f"{name} ({train_counts[name]} train, {val_counts[name]} "
                                      f"val)" for name in dataset.class_names))
    if class_weight:
        log.info("class weights: %s", ", ".join(f"{dataset.class_names[i]} {w:.3g}"
                                                for i, w in class_weight.items()))
    if dataset.validation_source == "validation_split":
        log.info("validation: %d images held out of data.train_dir (data.validation_split)",
                 len(dataset.validation))


def _fit(config: Config, dataset: Dataset, loss: str, cache_dir: Path, progress, staging: Path,
         previous: dict | None, class_weight: dict | None, strategy, placement):
    import keras

    from cnnclf.augment import is_active, make_augmenter
    from cnnclf.checkpoint import EpochCheckpoint
    from cnnclf.controls import TrainingControls
    from cnnclf.model import build_model, make_optimizer
    from cnnclf.pipeline import SkippedFiles, choose_cache, decoded_mb, make_dataset

    spec = image_spec(config)
    n_classes = len(dataset.class_names)
    skipped = SkippedFiles()
    augmenter = (make_augmenter(config.augment, spec.image_size)
                 if is_active(config.augment) else None)
    common = dict(spec=spec, n_classes=n_classes, batch_size=config.data.batch_size,
                  seed=config.train.seed, skipped=skipped)
    budget = config.data.cache_memory_mb
    train_cache = choose_cache(config.data.cache, len(dataset.train), spec, budget)
    if train_cache == "memory":  # one budget for both sets
        budget -= decoded_mb(len(dataset.train), spec)
    val_cache = choose_cache(config.data.cache, len(dataset.validation), spec, budget)
    train_ds = make_dataset(dataset.train.paths, dataset.train.labels, training=True,
                            cache=train_cache, cache_path=str(cache_dir / "train"),
                            shuffle_buffer=config.data.shuffle_buffer, augmenter=augmenter,
                            **common)
    val_ds = make_dataset(dataset.validation.paths, dataset.validation.labels, training=False,
                          cache=val_cache, cache_path=str(cache_dir / "validation"), **common)

    if placement.strategy == "multi_worker":
        from cnnclf.distribute import shard_datasets

        train_ds, val_ds = shard_datasets(train_ds, val_ds)
    done = previous["completed_epochs"] if previous else 0
    with strategy.scope():
        model = build_model(config, n_classes, spec.channels, placement.precision)
        model.compile(optimizer=make_optimizer(config, placement.precision, placement.replicas),
                      loss=loss, metrics=["accuracy"])
        if previous:
            from cnnclf.checkpoint import restore

            # Weights and optimizer state: training goes on exactly where it stopped.
            restore(model, staging, previous)
            log.info("resuming after epoch %d of %d", done, config.train.epochs)
    log.info("model: %s parameters; %d epochs of batch %d; cache: %s",
             f"{model.count_params():,}", config.train.epochs, config.data.batch_size,
             train_cache)
    scale = placement.replicas if config.train.scale_learning_rate else 1
    controls = TrainingControls(config.train, staging / "best.weights.h5",
                                previous["controls"] if previous else None,
                                config.train.learning_rate * scale)
    checkpoint = EpochCheckpoint(staging, config.to_dict(), controls,
                                 previous["history"] if previous else None)
    if progress == "auto":
        progress = 1 if sys.stdout.isatty() else 2
    stopped = controls.state["stopped_early"]
    if done < config.train.epochs and not stopped and placement.strategy == "multi_worker":
        from cnnclf.multiworker import fit_multi_worker

        if config.train.tensorboard:
            log.warning("warning: train.tensorboard is not supported with multi_worker yet; "
                        "no logs are written")
        fit_multi_worker(model, strategy, train_ds, val_ds, loss=loss,
                         epochs=config.train.epochs, initial_epoch=done,
                         global_batch_size=config.data.batch_size,
                         callbacks=[controls, checkpoint], class_weight=class_weight,
                         log=log.info)
    elif done < config.train.epochs and not stopped:
        extra = ([keras.callbacks.TensorBoard(log_dir=str(staging / "logs"))]
                 if config.train.tensorboard else [])
        model.fit(train_ds, validation_data=val_ds, epochs=config.train.epochs,
                  initial_epoch=done, shuffle=False, verbose=progress,
                  class_weight=class_weight,
                  callbacks=[keras.callbacks.TerminateOnNaN(), controls, checkpoint, *extra])
    checkpoint.wait()  # the last checkpoint is on disk before anything is published
    if controls.state["stopped_early"]:
        log.info("early stopping: %s did not improve for %d epochs",
                 config.train.early_stopping["monitor"], config.train.early_stopping["patience"])
    best_epoch = controls.finish()
    if best_epoch is not None:
        log.info("keeping the weights of epoch %d (best %s)", best_epoch, controls.best_monitor)
    training = {"best_epoch": best_epoch, "stopped_early": controls.state["stopped_early"],
                "resumed_after_epoch": done or None, "class_weight": class_weight,
                "placement": {"devices": placement.devices, "strategy": placement.strategy,
                              "replicas": placement.replicas,
                              "precision": placement.precision}}
    return model, dict(checkpoint.history), dict(skipped.reasons), val_ds, training


def _validate(model, val_ds, config: Config, dataset: Dataset) -> tuple[float | None, dict]:
    """Chooses the binary threshold (per train.threshold) and evaluates on validation data."""
    import numpy as np

    from cnnclf.errors import DataError
    from cnnclf.metrics import classification_metrics
    from cnnclf.thresholds import choose_threshold

    labels, scores = [], []
    for images, batch_labels in val_ds:
        # A direct call, not predict_on_batch: under MirroredStrategy the latter runs the
        # whole batch on every replica and returns each replica's copy.
        scores.append(np.asarray(model(images, training=False), dtype=np.float32))
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
                  metrics: dict, training: dict) -> None:
    placement_record = training.pop("placement")
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
    final = {k: v[-1] for k, v in history.items()
             if k not in ("epoch", "epoch_seconds") and v}
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
        **training,
        "placement": placement_record,
        "final_metrics": final,
        "threshold": threshold_record,
        "skipped_files": [{"path": p, "reason": r} for p, r in sorted(skipped.items())],
        "train_seconds": round(seconds, 2),
    })
