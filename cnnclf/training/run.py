"""Training: from a validated config to a published bundle.

Everything that can fail on the user's input (the config, the folder layout, the destination)
is checked before TensorFlow is imported, so a typo costs milliseconds, not an import and a
half-built pipeline. Then a `trainer.Trainer` trains; this module turns how a run ends (an
interrupt, a full disk, a failure after some epochs were saved) into what the user is told.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from cnnclf import storage
from cnnclf.config import Config
from cnnclf.data.layout import Dataset
from cnnclf.errors import CnnclfError, ConfigError, Interrupted, RunStopped
from cnnclf.model.transfer import planned_epochs, prepare, random_features_warning
from cnnclf.storage.config_paths import local_init_from
from cnnclf.training.record import TrainResult
from cnnclf.training.rundir import DamagedRun, RunDir, completed_epochs
from cnnclf.training.runs import check_destination, new_run_dir, usable_destination
from cnnclf.training.shards import training_data
from cnnclf.training.trainer import Trainer, TrainSetup

__all__ = ["Terminated", "TrainResult", "class_weights", "resolve_paths", "train"]

log = logging.getLogger("cnnclf")


def resolve_paths(config: Config) -> Config:
    """Makes data and model paths absolute, so the saved config still works from another
    directory (and `cnnclf train --config <bundle>/config.yaml` trains again)."""
    import dataclasses

    data, model = config.data, config.model
    absolute: dict[str, Any] = {
        k: str(Path(v).resolve())
        for k in ("train_dir", "test_dir")
        if (v := getattr(data, k)) is not None and not storage.is_url(v)
    }
    changes: dict[str, Any] = {}
    if model.init_from and not storage.is_url(model.init_from):
        changes["init_from"] = str(Path(model.init_from).resolve())
    if model.backbone and model.backbone.weights not in ("imagenet", "none"):
        changes["backbone"] = dataclasses.replace(
            model.backbone, weights=str(Path(model.backbone.weights).resolve())
        )
    return dataclasses.replace(
        config,
        data=dataclasses.replace(data, **absolute),
        model=dataclasses.replace(model, **changes),
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
    callbacks: tuple = (),
) -> TrainResult:
    """Trains a model as `config` says and writes its bundle.

    The run's life on disk (lock, checkpoints, publishing) belongs to `rundir.RunDir`, the
    training itself to `trainer.Trainer`; this function checks what it can before TensorFlow
    loads and says how a run that ended early can go on.

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
        callbacks: extra Keras callbacks (`TrainSetup.callbacks`), e.g. `cnnclf tune`'s pruning.

    Returns:
        A `TrainResult` with the published bundle's path and the history.

    Raises:
        RunStopped (Interrupted for Ctrl-C): training ended early; `completed_epochs` > 0 means
        `--resume` continues it.
    """
    started = time.monotonic()
    if storage.is_url(out_dir):
        from cnnclf.training.remote import train_to_url

        return train_to_url(
            train,
            config,
            str(out_dir),
            overwrite=overwrite,
            resume=resume,
            config_path=config_path,
            verbose=verbose,
            device=device,
            progress=progress,
            callbacks=callbacks,
        )
    config = resolve_paths(config)
    if resume and out_dir is None:
        raise ConfigError(
            "--resume needs --out DIR: the folder the interrupted run was "
            "writing (its state is in the hidden DIR.partial beside it)"
        )
    dataset, loss, class_weight = _check_data(config)
    destination, label = _destination(out_dir, config_path, overwrite, resume)
    if resume:
        _check_resumable(destination, config)  # a config mismatch costs no TensorFlow import
    # weights files and init_from (a URL downloaded first): before TensorFlow trains anything
    start = prepare(local_init_from(config))
    if warning := random_features_warning(config):
        log.warning("%s", warning)
    setup = TrainSetup(
        config,
        dataset,
        loss,
        class_weight,
        start,
        config_path,
        verbose,
        device,
        progress,
        started,
        tuple(callbacks),
    )
    # Only the chief of a multi_worker cluster writes the bundle; that is known once the
    # cluster is up (the Trainer locks it then), so other runs lock their folder now, before
    # TensorFlow loads.
    single = config.train.distribute != "multi_worker"
    run = RunDir(destination, overwrite=overwrite, resume=resume, label=label)
    caught: list[int] = []
    with _signals_as_interrupts(caught), contextlib.ExitStack() as stack:
        if single:
            stack.enter_context(run)
        try:
            return Trainer(setup, run, stack).train()
        except BaseException as exc:
            stack.close()  # waits for a checkpoint being written, then frees the lock
            _forget_reserved(destination, out_dir)
            done = completed_epochs(run.staging)
            cause = exc
            if caught and not isinstance(exc, (KeyboardInterrupt, RunStopped, DamagedRun)):
                # The interrupt surfaced as another exception (inside TensorFlow, say).
                cause = Terminated() if caught[-1] == signal.SIGTERM else KeyboardInterrupt()
            raise _stopped(cause, run, done, planned_epochs(config)) from exc


def _check_data(config: Config) -> tuple[Dataset, str, dict[int, float] | None]:
    """The data set, the loss and the class weights: the config errors they can raise come
    before TensorFlow loads."""
    # Under multi_worker from a URL, `dataset` is this worker's shard (training/shards.py).
    whole, dataset = training_data(config)
    from cnnclf.model.build import loss_for

    loss = loss_for(config, len(dataset.class_names), dataset.multi_label)
    if config.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "train.tensorboard: needs the tensorboard package: pip install "
            "'cnnclf[tensorboard]' (or set train.tensorboard: false)"
        )
    return dataset, loss, class_weights(config, whole)


def _destination(out_dir, config_path, overwrite: bool, resume: bool) -> tuple[Path, str]:
    """The folder to publish to, and how messages name it."""
    if out_dir is None:
        destination = new_run_dir(config_path)  # reserved: no other run can take the name
        log.info("run folder: %s", destination)
        return destination, f"run folder {destination}"
    label = f"--out {out_dir}"
    destination = usable_destination(Path(out_dir), label)
    if not resume:  # a resume may replace what its run was allowed to (RunDir knows)
        check_destination(destination, overwrite)
    return destination, label


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
        with contextlib.suppress(OSError):
            destination.rmdir()  # only if still empty


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
    assert isinstance(choice, dict)  # the schema allows "none", "balanced" or a mapping
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
