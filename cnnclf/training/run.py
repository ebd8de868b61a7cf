"""Training: from a validated config to a published bundle.

Everything that can fail on the user's input (the config, the folder layout, the destination)
is checked before TensorFlow is imported, so a typo costs milliseconds, not an import and a
half-built pipeline.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import logging
import math
import os
import platform
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cnnclf import __version__
from cnnclf.bundle import (
    BUNDLE_FORMAT,
    CLASS_INDICES_FILE,
    CONFIG_FILE,
    CURVES_FILE,
    HISTORY_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    Preprocessing,
    write_json,
)
from cnnclf.config import Config, dump_config
from cnnclf.data.decode import ImageSpec
from cnnclf.data.layout import Dataset, discover
from cnnclf.errors import CnnclfError, ConfigError, Interrupted, RunStopped
from cnnclf.model.transfer import planned_epochs, prepare, suggest_backbone
from cnnclf.training.rundir import (
    DamagedRun,
    RunDir,
    check_destination,
    completed_epochs,
    fault_point,
    usable_destination,
)
from cnnclf.training.runs import new_run_dir

log = logging.getLogger("cnnclf")


@dataclass(frozen=True)
class TrainResult:
    bundle_dir: Path | None
    history: dict
    skipped: dict
    seconds: float
    final_metrics: dict  # of the saved weights' epoch (the best one under keep_best)


def resolve_paths(config: Config) -> Config:
    """Makes data and model paths absolute, so the saved config still works from another
    directory (and `cnnclf train --config <bundle>/config.yaml` trains again)."""
    import dataclasses

    data, model = config.data, config.model
    absolute = {
        k: str(Path(v).resolve())
        for k in ("train_dir", "test_dir")
        if (v := getattr(data, k)) is not None
    }
    changes = {}
    if model.init_from:
        changes["init_from"] = str(Path(model.init_from).resolve())
    if model.backbone and model.backbone["weights"] not in ("imagenet", "none"):
        changes["backbone"] = dict(
            model.backbone, weights=str(Path(model.backbone["weights"]).resolve())
        )
    return dataclasses.replace(
        config,
        data=dataclasses.replace(data, **absolute),
        model=dataclasses.replace(model, **changes),
    )


def image_spec(config: Config) -> ImageSpec:
    return ImageSpec(
        tuple(config.data.image_size), config.data.color_mode, config.data.interpolation
    )


def train(
    config: Config,
    *,
    out_dir: str | Path | None = None,
    config_path: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    verbose: bool = False,
    device: str = "auto",
    progress: int | str = "auto",
) -> TrainResult:
    """Trains a model as `config` says and writes its bundle.

    The run's life on disk (lock, checkpoints, publishing) belongs to `rundir.RunDir`; this
    function only decides what is trained and what the bundle holds.

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

    Raises:
        RunStopped (Interrupted for Ctrl-C): training ended early; `completed_epochs` > 0 means
        `--resume` continues it.
    """
    started = time.monotonic()
    config = resolve_paths(config)
    if resume and out_dir is None:
        raise ConfigError(
            "--resume needs --out DIR: the folder the interrupted run was "
            "writing (its state is in the hidden DIR.partial beside it)"
        )
    dataset = discover(config.data, config.train.seed)
    from cnnclf.model.build import loss_for

    loss = loss_for(config, len(dataset.class_names))  # a config error: before TensorFlow
    if config.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "train.tensorboard: needs the tensorboard package: pip install "
            "'cnnclf[tensorboard]' (or set train.tensorboard: false)"
        )
    class_weight = class_weights(config, dataset)
    if out_dir is not None:
        label = f"--out {out_dir}"
        destination = usable_destination(Path(out_dir), label)
        if not resume:  # a resume may replace what its run was allowed to (RunDir knows)
            check_destination(destination, overwrite)
    else:
        destination = new_run_dir(config_path)  # reserved: no other run can take the name
        label = f"run folder {destination}"
        log.info("run folder: %s", destination)
    if resume:
        _check_resumable(destination, config)  # a config mismatch costs no TensorFlow import
    start = prepare(config)  # weights files and init_from: before TensorFlow trains anything
    # Only the chief of a multi_worker cluster writes the bundle; that is known once the
    # cluster is up, so other runs lock their folder now, before the 2 s import.
    single = config.train.distribute != "multi_worker"
    run = RunDir(destination, overwrite=overwrite, resume=resume, label=label)
    caught: list[int] = []
    with _signals_as_interrupts(caught), contextlib.ExitStack() as stack:
        if single:
            stack.enter_context(run)
        try:
            return _train_in(
                run,
                stack,
                single,
                config,
                dataset,
                loss,
                class_weight,
                config_path,
                verbose,
                device,
                progress,
                started,
                start,
            )
        except BaseException as exc:
            stack.close()  # waits for a checkpoint being written, then frees the lock
            _forget_reserved(destination, out_dir)
            done = completed_epochs(run.staging)
            cause = exc
            if caught and not isinstance(exc, (KeyboardInterrupt, RunStopped, DamagedRun)):
                # The interrupt surfaced as another exception (inside TensorFlow, say).
                cause = Terminated() if caught[-1] == signal.SIGTERM else KeyboardInterrupt()
            raise _stopped(cause, run, done, planned_epochs(config)) from exc


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `docker stop`, a batch scheduler's pre-emption), handled like Ctrl-C."""


@contextlib.contextmanager
def _signals_as_interrupts(caught: list):
    """While training, Ctrl-C raises KeyboardInterrupt as usual and SIGTERM raises `Terminated`
    (instead of Python's default of dying on the spot), and each signal is noted in `caught`.

    Why note it: an interrupt can land inside TensorFlow or another library that turns it into
    some other exception; the run must still stop as an interrupt (exit 130, resume command),
    not be reported as a failure.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_int(signum, frame):
        caught.append(signum)
        if len(caught) == 1:
            raise KeyboardInterrupt
        if len(caught) >= 3:  # the user insists: every committed epoch is safe on disk anyway
            sys.stderr.write("interrupted again: stopping now\n")
            sys.stderr.flush()
            os._exit(130)
        # A second Ctrl-C while the first is being handled (the checkpoint in flight finished,
        # the lock freed) is noted, not raised: raised, it would cut that short.

    def on_term(signum, frame):
        caught.append(signum)
        if len(caught) == 1:
            raise Terminated

    previous_term = signal.signal(signal.SIGTERM, on_term)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:  # not when started with SIGINT ignored
        signal.signal(signal.SIGINT, on_int)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def _train_in(
    run,
    stack,
    single,
    config,
    dataset,
    loss,
    class_weight,
    config_path,
    verbose,
    device,
    progress,
    started,
    start,
) -> TrainResult:
    from cnnclf.data.pipeline import SkippedFiles

    skipped = SkippedFiles()
    skipped.reasons.update(getattr(dataset, "skipped", None) or {})
    stores = _open_stores(config, dataset, stack, skipped)
    used = _decode_all(stores, dataset, skipped)

    from cnnclf.tf_loader import import_tensorflow, quiet_keras_warnings, seed_everything
    from cnnclf.training.distribute import make_strategy, select_devices

    tf = import_tensorflow(verbose)
    if not verbose:
        quiet_keras_warnings()
    select_devices(device)
    strategy, placement = make_strategy(config.train)
    seed_everything(config.train.seed, config.train.deterministic)
    log.info("%s", placement.describe())
    _describe(dataset, used, class_weight)
    hint = suggest_backbone(config, used["train"])
    if hint:
        log.info("%s", hint)
    if not single:
        if not placement.is_chief:
            # Other workers run the same steps (collective ops need everyone) but write to a
            # throw-away folder: only the chief publishes the bundle.
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="cnnclf-"))
            chief = run
            run = stack.enter_context(RunDir(Path(scratch) / "worker-bundle"))
            if chief.resume:  # every worker resumes from the chief's checkpoint (shared disk)
                run.adopt_progress(chief.staging)
        else:
            stack.enter_context(run)
    try:
        model, history, val_ds, training = _fit(
            config, dataset, stores, loss, progress, run, class_weight, strategy, placement, start
        )
    except tf.errors.OpError as exc:
        if placement.strategy != "multi_worker":
            raise
        raise CnnclfError(
            f"multi_worker: lost contact with another worker "
            f"({type(exc).__name__} in a collective operation); check that every "
            "worker is running, then restart them all with --resume"
        ) from None
    _warn_skipped(skipped.reasons)
    threshold, metrics = _validate(model, val_ds, config, dataset)
    seconds = time.monotonic() - started
    final = final_metrics(history, training["best_epoch"])
    bundle_dir = run.write_bundle(
        lambda folder: _write_bundle(
            folder,
            model,
            config,
            dataset,
            used,
            history,
            final,
            dict(skipped.reasons),
            config_path,
            seconds,
            threshold,
            metrics,
            training,
            run.run_id,
        )
    )
    bundle_dir = run.publish()
    if not placement.is_chief:
        log.info("worker done; the chief writes the bundle")
        return TrainResult(None, history, dict(skipped.reasons), time.monotonic() - started, final)
    log.info("saved bundle to %s", bundle_dir)
    return TrainResult(bundle_dir, history, dict(skipped.reasons), seconds, final)


def final_metrics(history: dict, best_epoch: int | None) -> dict:
    """The metrics of the epoch whose weights are saved: the best one when kept, else the last."""
    index = (best_epoch - 1) if best_epoch else -1
    return {k: v[index] for k, v in history.items() if k not in ("epoch", "epoch_seconds") and v}


def _stopped(exc: BaseException, run, done: int, epochs: int) -> BaseException:
    """What the user is told when training ends early: what is kept, and how to go on."""
    if isinstance(exc, (RunStopped, DamagedRun)):
        return exc
    if run.published:  # the bundle is in place: only the clean-up after it was cut short
        code = (
            143 if isinstance(exc, Terminated) else 130 if isinstance(exc, KeyboardInterrupt) else 1
        )
        return RunStopped(
            f"stopped after the bundle was published to {run.destination}",
            run.destination,
            0,
            exit_code=code,
        )
    kept = (
        f"epochs 1-{done} are kept in {run.staging}"
        if done > 1
        else f"epoch 1 is kept in {run.staging}"
        if done == 1
        else ""
    )
    finished = (
        " (training had finished; the bundle was not yet published)" if done == epochs else ""
    )
    if isinstance(exc, KeyboardInterrupt):
        what, code = (
            ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        )
        if done:
            return Interrupted(
                f"{what} after epoch {done} of {epochs}{finished}; {kept}",
                run.destination,
                done,
                exit_code=code,
            )
        return Interrupted(
            f"{what} before the first epoch finished: nothing to resume; "
            "run the same command again to start over",
            run.destination,
            0,
            exit_code=code,
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" ({exc.filename})" if exc.filename else ""
        if done:
            return RunStopped(
                f"no space left on device{where}; {kept}{finished}: free some space, then resume",
                run.destination,
                done,
            )
        return RunStopped(
            f"no space left on device{where} before the first epoch was saved: "
            "free some space, then run the same command again",
            run.destination,
            0,
        )
    if done and isinstance(exc, Exception):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not isinstance(exc, CnnclfError):
            first = f"{type(exc).__name__}: {first}"
        return RunStopped(
            f"{first}; {kept}{finished}",
            run.destination,
            done,
            exit_code=getattr(exc, "exit_code", 1),
        )
    return exc


def _forget_reserved(destination: Path, out_dir) -> None:
    """Removes the empty runs/ folder reserved for a run that failed before publishing."""
    if out_dir is None:
        try:
            destination.rmdir()  # only if still empty
        except OSError:
            pass


def _open_stores(config: Config, dataset: Dataset, stack, skipped) -> dict:
    """The decoded-image stores of both sets, in a cache folder removed when the run ends."""
    from cnnclf.data.pipeline import choose_cache, decoded_mb, open_store

    spec = image_spec(config)
    cache_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cnnclf-cache-")))
    budget = config.data.cache_memory_mb
    train_cache = choose_cache(config.data.cache, len(dataset.train), spec, budget)
    if train_cache == "memory":  # one budget for both sets
        budget -= decoded_mb(len(dataset.train), spec)
    val_cache = choose_cache(config.data.cache, len(dataset.validation), spec, budget)
    return {
        "train": open_store(
            dataset.train,
            spec=spec,
            training=True,
            seed=config.train.seed,
            cache=train_cache,
            cache_path=str(cache_dir / "train"),
            skipped=skipped,
        ),
        "validation": open_store(
            dataset.validation,
            spec=spec,
            training=False,
            seed=config.train.seed,
            cache=val_cache,
            cache_path=str(cache_dir / "validation"),
            skipped=skipped,
        ),
    }


def _decode_all(stores: dict, dataset: Dataset, skipped) -> dict:
    """Decodes every image once before the first epoch; returns the counts actually used.

    Why before training: a class whose files are all unreadable, or a validation set with no
    readable image, must stop the run before hours of training, not after, and bundle.json
    must count the images the model saw, not the files that were listed. With a cache the
    first epoch reads what this pass decoded, so it costs no extra decoding.
    """
    from cnnclf.data.pipeline import decode_all
    from cnnclf.errors import DataError

    total = sum(len(s.store) for s in stores.values())
    if total >= 2000:  # a pause worth explaining; small sets decode in a blink
        log.info("decoding %d images once, on every core, before the first epoch", total)
    used = {}
    for name, opened in stores.items():
        decode_all(opened.store)
        used[name] = opened.used_counts(dataset.class_names)
    for name, key in (("train", "data.train_dir"), ("validation", _validation_key(dataset))):
        empty = [c for c, n in used[name].items() if n == 0]
        if name == "train" and empty:
            raise DataError(
                f"{key}: class {empty[0]} has no readable image "
                f"({_examples(stores[name].store, dataset.class_names.index(empty[0]), stores[name].labels, skipped)}); "
                "run cnnclf check-data to see every problem"
            )
        if name == "validation" and not sum(used[name].values()):
            raise DataError(
                f"{key}: no readable image to validate on "
                f"({len(stores[name].store)} file(s), all unreadable); run cnnclf "
                "check-data to see every problem"
            )
    return used


def _validation_key(dataset: Dataset) -> str:
    return "data.test_dir" if dataset.validation_source == "test_dir" else "data.validation_split"


def _examples(store, label: int, labels, skipped) -> str:
    paths = [p for p, y in zip(store.paths, labels) if y == label]
    if not paths:
        return "no files"
    reason = skipped.reasons.get(paths[0], "unreadable")
    return f"{len(paths)} file(s), all unreadable, e.g. {paths[0]}: {reason}"


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
        raise ConfigError(
            f"train.class_weight: {', '.join(unknown)} is not a class "
            f"(classes: {', '.join(dataset.class_names)})"
        )
    return {i: float(choice.get(name, 1.0)) for i, name in enumerate(dataset.class_names)}


def _check_resumable(destination: Path, config: Config) -> None:
    """Refuses a resume with another config, before TensorFlow loads (rundir reads no Keras)."""
    from cnnclf.training.rundir import read_progress, staging_dir

    progress = read_progress(staging_dir(destination))
    if progress is None:
        return  # RunDir says what is missing, once it holds the lock
    saved, now = _flatten(progress.get("config") or {}), _flatten(config.to_dict())
    # A key the interrupted run's cnnclf did not have yet meant what its default means now:
    # upgrading cnnclf between a kill and --resume must not make the run unresumable.
    defaults = _flatten(Config().to_dict())
    saved = {
        **{key: defaults[key] for key in now.keys() - saved.keys() if key in defaults},
        **saved,
    }
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            raise ConfigError(
                f"--resume: {key} is {now.get(key)!r} but the interrupted run "
                f"used {saved.get(key)!r}; resume with the same config and --set "
                "options"
            )


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and prefix.count(".") < 1:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.loads(json.dumps(value))
    return flat


def _describe(dataset: Dataset, used: dict, class_weight: dict | None) -> None:
    log.info(
        "classes: %s",
        ", ".join(
            f"{name} ({used['train'][name]} train, {used['validation'][name]} val)"
            for name in dataset.class_names
        ),
    )
    if class_weight:
        log.info(
            "class weights: %s",
            ", ".join(f"{dataset.class_names[i]} {w:.3g}" for i, w in class_weight.items()),
        )
    if dataset.validation_source == "validation_split":
        log.info(
            "validation: %d images held out of data.train_dir (data.validation_split)",
            sum(used["validation"].values()),
        )
    elif set(dataset.train.paths) & set(dataset.validation.paths):
        log.warning(
            "warning: data.test_dir holds the training images themselves (the same "
            "folder or links into it): validation accuracy will measure memory, not "
            "generalisation; set data.test_dir: null to hold out "
            "data.validation_split instead"
        )


def _phase_record(plan, starts: list, history: dict, saved) -> list[dict] | None:
    """bundle.json's `phases`: which epochs each phase ran, at what rate, training what
    (the layers that trained: `unfreeze: 500` on a 52-layer backbone trained 52).

    `saved` is the model the bundle holds, not the one `fit` trained: that can be a wrapper
    (augmentation in the step, XLA per replica) whose layers are not the model's.
    """
    from cnnclf.model.transfer import layers_to_unfreeze, weighted_layers

    if len(plan) == 1 and not plan[0].frozen:
        return None
    counted = any(p.unfreeze not in (None, "all") for p in plan)
    candidates = weighted_layers(saved) if counted else []
    done = len(history.get("epoch", []))
    record = []
    for i, (phase, first) in enumerate(zip(plan, starts)):
        last = starts[i + 1] if i + 1 < len(starts) else min(first + phase.epochs, done)
        record.append(
            {
                "name": phase.name,
                "epochs": [first + 1, last] if last > first else [],
                "learning_rate": phase.learning_rate,
                "trains": (
                    "the head"
                    if phase.frozen
                    else "everything"
                    if phase.name == "train"
                    else f"head and {phase.unfreeze} feature layers"
                    if phase.unfreeze == "all"
                    else f"head and the top {len(layers_to_unfreeze(candidates, phase))} "
                    "feature layers"
                ),
            }
        )
    return record


def _fit(
    config: Config,
    dataset: Dataset,
    stores: dict,
    loss: str,
    progress,
    run,
    class_weight: dict | None,
    strategy,
    placement,
    start,
):
    import keras

    from cnnclf.data.augment import augmenting_model, is_active, make_augmenter, where_to_augment
    from cnnclf.data.pipeline import make_dataset
    from cnnclf.model.build import build_model, make_optimizer
    from cnnclf.model.transfer import apply_phase, copy_features, phases, planned_epochs
    from cnnclf.training.callbacks import TrainingControls
    from cnnclf.training.checkpoint import EpochCheckpoint, restore
    from cnnclf.training.distribute import compile_replica_forward

    spec = image_spec(config)
    n_classes = len(dataset.class_names)
    augment_where = (
        where_to_augment(config.augment.where, placement.devices)
        if is_active(config.augment)
        else None
    )
    augmenter = (
        make_augmenter(config.augment, spec.image_size) if augment_where == "pipeline" else None
    )
    common = dict(
        spec=spec,
        n_classes=n_classes,
        batch_size=config.data.batch_size,
        seed=config.train.seed,
        distributed=placement.strategy != "default",
    )
    train_ds = make_dataset(
        stores["train"],
        training=True,
        shuffle_buffer=config.data.shuffle_buffer,
        augmenter=augmenter,
        **common,
    )
    val_ds = make_dataset(stores["validation"], training=False, **common)

    if placement.strategy == "multi_worker":
        from cnnclf.training.distribute import shard_datasets

        train_ds, val_ds = shard_datasets(train_ds, val_ds)
    previous = run.progress
    done = previous["completed_epochs"] if previous else 0
    scale = placement.replicas if config.train.scale_learning_rate else 1
    plan = phases(config)
    total = planned_epochs(config)
    controls = TrainingControls(
        config.train, previous["controls"] if previous else None, plan[0].learning_rate * scale
    )
    current = len(controls.state.get("phase_starts", [0])) - 1  # the phase to go on with

    def compile_for(phase):
        with strategy.scope():
            note = apply_phase(saved, phase)
            model.compile(
                optimizer=make_optimizer(
                    config, placement.precision, placement.replicas, phase.learning_rate
                ),
                loss=loss,
                metrics=["accuracy"],
                steps_per_execution=executions,
                jit_compile=keras_jit,
            )
        return note

    with strategy.scope():
        model = build_model(
            config,
            n_classes,
            spec.channels,
            placement.precision,
            start.weights.path if start.weights else None,
        )
        if start.init_from and not previous:
            copy_features(model, start.init_from)
            log.info("feature layers copied from %s", start.init_from)
        saved = model  # what the bundle holds; `model` is what fit trains (weights shared)
        if augment_where == "step":
            model = augmenting_model(saved, config.augment, spec.image_size, config.train.seed)
        # Keras' jit_compile=True compiles the whole step, which under a tf.distribute
        # strategy includes the cross-replica gradient sum that XLA cannot hold: there only
        # each replica's forward and backward pass is compiled.
        keras_jit = placement.jit_compile and placement.strategy in ("default", "one_device")
        if placement.jit_compile and not keras_jit:
            model = compile_replica_forward(model)
    executions = steps_per_execution(
        config.train.steps_per_execution,
        placement.devices,
        math.ceil(
            sum(stores["train"].used_counts(dataset.class_names).values()) / config.data.batch_size
        ),
    )
    note = compile_for(plan[current])
    # What runs, not what was asked: Keras falls back to no XLA, with a warning, for a model
    # with a layer XLA cannot compile.
    jit_compile = bool(model.jit_compile) if keras_jit else placement.jit_compile
    controls.set_model(model)  # also when every epoch is done and fit never runs
    if previous:
        with strategy.scope():
            # Weights, optimizer state and best weights: training goes on exactly where it
            # stopped.
            restore(model, controls, *run.load_checkpoint())
        log.info("resuming after epoch %d of %d", done, total)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    log.info(
        "model: %s parameters (%s trainable now); %d epoch%s of batch %d; cache: %s",
        f"{model.count_params():,}",
        f"{trainable:,}",
        total,
        "" if total == 1 else "s",
        config.data.batch_size,
        stores["train"].store.where,
    )
    if augment_where:
        log.info(
            "augmentation: in the %s",
            "training step" if augment_where == "step" else "input pipeline",
        )
    if note and not previous:
        log.info("%s", note)
    checkpoint = EpochCheckpoint(
        run,
        config.to_dict(),
        controls,
        previous["history"] if previous else None,
        config.train.checkpoint_every_epochs,
        config.train.checkpoint_every_minutes,
    )
    if progress == "auto":
        progress = 1 if sys.stdout.isatty() else 2
    extra = (
        [keras.callbacks.TensorBoard(log_dir=str(run.logs_dir))]
        if config.train.tensorboard and placement.strategy != "multi_worker"
        else []
    )
    if config.train.tensorboard and placement.strategy == "multi_worker":
        log.warning(
            "warning: train.tensorboard is not supported with multi_worker yet; no logs are written"
        )
    for index in range(current, len(plan)):
        phase = plan[index]
        if index > current:  # a new phase: from the best weights when they are kept
            if controls.best_weights is not None:
                model.set_weights(controls.best_weights)
            log.info("%s", compile_for(phase))
        controls.begin_phase(
            index,
            phase.learning_rate * scale,
            len(checkpoint.history.get("epoch", [])),
            phase.epochs,
        )
        end = controls.state["phase_starts"][index] + phase.epochs
        if done >= end or controls.state["stopped_early"]:
            continue  # resumed after this phase ended (or stopped early)
        if placement.strategy == "multi_worker":
            from cnnclf.training.multiworker import fit_multi_worker

            fit_multi_worker(
                model,
                strategy,
                train_ds,
                val_ds,
                loss=loss,
                epochs=end,
                initial_epoch=done,
                global_batch_size=config.data.batch_size,
                callbacks=[controls, checkpoint],
                class_weight=class_weight,
                log=log.info,
            )
        else:
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=end,
                initial_epoch=done,
                shuffle=False,
                verbose=progress,
                class_weight=class_weight,
                callbacks=[controls, checkpoint, *extra],
            )
        run.wait()  # the last checkpoint is on disk (or its failure raised)
        done = len(checkpoint.history.get("epoch", []))
        if controls.nan_epoch is not None:
            raise CnnclfError(
                f"training stopped: the loss became NaN in epoch "
                f"{controls.nan_epoch}; lower train.learning_rate or check the "
                "data"
            )
        if controls.state["stopped_early"]:
            log.info(
                "early stopping: %s did not improve for %d epochs%s",
                config.train.early_stopping["monitor"],
                config.train.early_stopping["patience"],
                "; fine-tuning next" if index + 1 < len(plan) else "",
            )
    run.wait()  # the last checkpoint is on disk (or its failure raised) before publishing
    best_epoch = controls.finish()
    if best_epoch is not None:
        log.info("keeping the weights of epoch %d (best %s)", best_epoch, controls.best_monitor)
    training = {
        "best_epoch": best_epoch,
        "stopped_early": controls.state["stopped_early"],
        "resumed_after_epoch": (previous or {}).get("completed_epochs") or None,
        "class_weight": class_weight,
        "phases": _phase_record(
            plan, controls.state.get("phase_starts", [0]), checkpoint.history, saved
        ),
        "start": start.to_json(config),
        "placement": {
            "devices": placement.devices,
            "strategy": placement.strategy,
            "replicas": placement.replicas,
            "precision": placement.precision,
            "jit_compile": jit_compile,
        },
    }
    return saved, dict(checkpoint.history), val_ds, training


def steps_per_execution(setting: int | str, devices: list[str], steps_per_epoch: int) -> int:
    """Resolves train.steps_per_execution: one step per call on CPU (the step dominates and
    per-batch progress stays live); on an accelerator, enough steps per call that launching
    them costs little next to running them."""
    if setting != "auto":
        return int(setting)
    if any(":GPU:" in d.upper() or ":TPU:" in d.upper() for d in devices):
        return max(1, min(32, steps_per_epoch))
    return 1


def _validate(model, val_ds, config: Config, dataset: Dataset) -> tuple[float | None, dict]:
    """Chooses the binary threshold (per train.threshold) and evaluates on validation data."""
    import numpy as np

    from cnnclf.errors import DataError
    from cnnclf.inference.metrics import classification_metrics
    from cnnclf.inference.thresholds import choose_threshold

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
            log.info(
                "threshold: %.4f chosen by %s on the validation data",
                threshold,
                config.train.threshold,
            )
    else:
        y, threshold = y.argmax(axis=1), None
    metrics = classification_metrics(y, probs, dataset.class_names, threshold)
    return threshold, metrics


def _validation_folder(config: Config, dataset: Dataset) -> str:
    return (
        config.data.test_dir if dataset.validation_source == "test_dir" else config.data.train_dir
    )


def _warn_skipped(skipped: dict) -> None:
    if not skipped:
        return
    listed = "; ".join(f"{path} ({reason})" for path, reason in sorted(skipped.items())[:10])
    more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    log.warning(
        "warning: skipped %d unreadable image(s), listed in bundle.json: %s%s",
        len(skipped),
        listed,
        more,
    )


def _write_bundle(
    folder: Path,
    model,
    config: Config,
    dataset: Dataset,
    used: dict,
    history: dict,
    final: dict,
    skipped: dict,
    config_path,
    seconds: float,
    threshold: float | None,
    metrics: dict,
    training: dict,
    run_id: str,
) -> None:
    training = dict(training)
    placement_record = training.pop("placement")
    import keras
    import tensorflow as tf

    from cnnclf.inference import plots

    model.save(folder / MODEL_FILE)
    fault_point("bundle.model_written")
    write_json(folder / CLASS_INDICES_FILE, dataset.class_indices)
    binary = len(dataset.class_names) == 2
    preprocessing = Preprocessing(
        image_spec(config),
        config.augment.rescale,
        "binary" if binary else "categorical",
        threshold if binary else None,
    )
    write_json(folder / PREPROCESSING_FILE, preprocessing.to_json())
    (folder / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
    write_json(folder / HISTORY_FILE, history)
    validation_folder = _validation_folder(config, dataset)
    threshold_record = (
        {"rule": config.train.threshold, "value": threshold, "chosen_on": validation_folder}
        if binary
        else None
    )
    note = (
        "the threshold was chosen on this same validation data, so sensitivity and "
        "specificity are optimistic; run cnnclf evaluate on other data for unbiased figures"
        if binary and isinstance(config.train.threshold, str)
        else None
    )
    write_json(
        folder / METRICS_FILE,
        {
            "data": dataset.validation_source,
            "data_dir": validation_folder,
            **metrics,
            **({"note": note} if note else {}),
        },
    )
    fine_tune = [p for p in training.get("phases") or [] if p["name"] == "fine_tune"]
    plots.training_curves(
        history,
        folder / CURVES_FILE,
        fine_tune[0]["epochs"][0] if fine_tune and fine_tune[0]["epochs"] else None,
    )
    write_json(
        folder / MANIFEST_FILE,
        {
            "format": BUNDLE_FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cnnclf_version": __version__,
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "python_version": platform.python_version(),
            "config_file": str(Path(config_path).resolve()) if config_path else None,
            "class_names": dataset.class_names,
            "train_images": used["train"],
            "validation_images": used["validation"],
            "validation_source": dataset.validation_source,
            "epochs": len(history.get("epoch", [])),
            **training,
            "placement": placement_record,
            "final_metrics": final,
            "threshold": threshold_record,
            "skipped_files": [{"path": p, "reason": r} for p, r in sorted(skipped.items())],
            "train_seconds": round(seconds, 2),
            "run_id": run_id,
        },
    )
