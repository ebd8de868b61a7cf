"""The Trainer: one training run's state, and the steps that train it, in order.

`run.train` checks everything it can before TensorFlow loads, then hands a `TrainSetup` to a
`Trainer`. The run's state (config, data, stores, placement, run directory, model) lives on the
Trainer, so each step is a method that reads what the steps before it left:

    prepare()           decode every image once into stores
    start_tensorflow()  devices, strategy, precision, seeds
    build()             datasets, the model compiled for its first phase (restored on --resume)
    fit()               phase by phase: the head first, then fine-tuning from the best weights
    validate()          the temperature (train.calibrate) folded into the model, then the
                        binary threshold and the metrics on the validation data
    publish()           the bundle written into the run's staging folder, then renamed into place
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnclf.bundle.format import Preprocessing
from cnnclf.config import Config
from cnnclf.data.layout import Dataset
from cnnclf.errors import CnnclfError
from cnnclf.inference.metrics import small_validation_warning
from cnnclf.model.transfer import Phase, Start, phases, planned_epochs, suggest_backbone
from cnnclf.training import lr_find
from cnnclf.training.inputs import (
    decode_stores,
    describe,
    image_spec,
    make_datasets,
    open_stores,
    warn_skipped,
)
from cnnclf.training.record import TrainResult, final_metrics, image_counts, run_record
from cnnclf.training.rundir import RunDir, fault_point
from cnnclf.training.shards import check_same_data
from cnnclf.training.validation import (
    calibrate,
    check_monitors,
    metrics_json,
    positive_weights,
    threshold_and_metrics,
)

if TYPE_CHECKING:
    from cnnclf.training.callbacks import TrainingControls

log = logging.getLogger("cnnclf")


@dataclass(frozen=True)
class TrainSetup:
    """What `run.train` established before TensorFlow loaded, and how it was asked to run.

    Args:
        config: the validated config, its paths made absolute.
        dataset: the discovered training and validation files.
        loss: the Keras loss for the class count.
        class_weight: Keras `class_weight`, or None.
        start: the starting weights (`transfer.prepare`).
        config_path: the config file, recorded in bundle.json.
        verbose: let TensorFlow's own logging through.
        device: cpu | gpu | auto.
        progress: Keras `fit` verbosity, or "auto".
        started: `time.monotonic()` when the run started.
        callbacks: extra Keras callbacks for every `fit` after cnnclf's own (e.g. `cnnclf
            tune`'s pruning callback, which reads each epoch's validation metrics and may set
            `model.stop_training`); the run stays an ordinary one, published as usual.
    """

    config: Config
    dataset: Dataset
    loss: str
    class_weight: dict[int, float] | None
    start: Start
    config_path: str | Path | None
    verbose: bool
    device: str
    progress: int | str
    started: float
    callbacks: tuple = ()


class Trainer:
    """Trains one run, from decoded images to a published bundle.

    Args:
        setup: what the checks before TensorFlow established.
        run: the run directory; entered already unless train.distribute is multi_worker
            (where only the chief knows, once the cluster is up, that it publishes).
        stack: closes what the run opens (stores, a worker's scratch folder) when it ends.
    """

    # What the steps of `train()` set, in the order it runs them; a step reads only what an
    # earlier one set. (TensorFlow and Keras objects are typed Any: this module imports neither
    # at import time.)
    skipped: Any  # prepare: data.pipeline.SkippedFiles
    stores: dict  # prepare: "train"/"validation" -> the opened decoded-image stores
    used: dict  # prepare: images per class actually decoded, per set
    tf: Any  # start_tensorflow
    strategy: Any  # start_tensorflow: the tf.distribute strategy
    placement: Any  # start_tensorflow: distribute.Placement
    augment_where: str  # build: "pipeline" or "step"
    train_ds: Any  # build
    val_ds: Any  # build
    scale: int  # build: the learning-rate scale (replicas, when train.scale_learning_rate)
    controls: TrainingControls  # build
    current: int  # build: the phase to go on with
    executions: int  # build: steps_per_execution
    jit_compile: Any  # build
    saved: Any  # build: the keras.Model the bundle holds
    keras_jit: bool  # build
    model: Any  # build: the keras.Model fit trains (weights shared with `saved`)
    checkpoint: Any  # fit: the per-epoch checkpoint callback
    verbosity: Any  # fit
    extra_callbacks: list  # fit
    threshold: Any  # validate: a binary model's decision threshold
    metrics: Any  # validate: the report for metrics.json
    lr_find: list  # build: the range tests of learning_rate: auto (training/lr_find.py)
    calibration: dict | None  # validate: bundle.json's `calibration` (validation.calibrate)

    def __init__(self, setup: TrainSetup, run: RunDir, stack: contextlib.ExitStack):
        self.setup = setup
        self.config = setup.config
        self.dataset = setup.dataset
        self.run = run
        self.stack = stack
        self.spec = image_spec(self.config)
        self.plan: list[Phase] = phases(self.config)
        self.previous: dict | None = None  # the committed progress of a resumed run
        self.done = 0  # epochs completed, including those before a resume
        self.best_epoch: int | None = None
        # getattr: tests hand in Dataset-like objects written before multi-label existed.
        self.multi_label = bool(getattr(self.dataset, "multi_label", False))
        check_monitors(self.config, self.multi_label)
        self.positive_weights = (
            positive_weights(self.config, self.dataset) if self.multi_label else None
        )

    def train(self) -> TrainResult:
        self.prepare()
        self.start_tensorflow()
        self.claim_run_dir()
        try:
            # the first collective op: shards dealt from different listings stop every worker
            check_same_data(self.strategy, self.dataset, self.config.data.train_dir)
            lr_find.resolve_first_phase(self)  # learning_rate: auto, before the model is built
            self.build()
            self.fit()
        except self.tf.errors.OpError as exc:
            if self.placement.strategy != "multi_worker":
                raise
            raise CnnclfError(
                f"multi_worker: lost contact with another worker "
                f"({type(exc).__name__} in a collective operation); check that every "
                "worker is running, then restart them all with --resume"
            ) from None
        warn_skipped(self.skipped.reasons)
        self.validate()
        return self.publish()

    # -- before the model ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Opens the stores and decodes every image once (`inputs.decode_stores` says why)."""
        from cnnclf.data.pipeline import SkippedFiles

        self.skipped = SkippedFiles()
        self.skipped.reasons.update(getattr(self.dataset, "skipped", None) or {})
        self.stores = open_stores(self.config, self.dataset, self.stack, self.skipped)
        self.used = decode_stores(self.stores, self.dataset, self.skipped)

    def start_tensorflow(self) -> None:
        from cnnclf.tf_loader import import_tensorflow, quiet_keras_warnings, seed_everything
        from cnnclf.training.distribute import make_strategy, select_devices

        self.tf = import_tensorflow(self.setup.verbose)
        if not self.setup.verbose:
            quiet_keras_warnings()
        select_devices(self.setup.device)
        self.strategy, self.placement = make_strategy(self.config.train)
        seed_everything(self.config.train.seed, self.config.train.deterministic)
        log.info("%s", self.placement.describe())
        describe(self.dataset, self.used, self.setup.class_weight)
        hint = suggest_backbone(self.config, self.used["train"])
        if hint:
            log.info("%s", hint)

    def claim_run_dir(self) -> None:
        """In a multi_worker cluster, the chief locks the run folder now that it knows it is the
        chief; the other workers run the same steps (collective ops need everyone) but write to
        a throw-away folder: only the chief publishes the bundle."""
        if self.config.train.distribute != "multi_worker":
            return
        if self.placement.is_chief:
            self.stack.enter_context(self.run)
            return
        scratch = self.stack.enter_context(tempfile.TemporaryDirectory(prefix="cnnclf-"))
        chief = self.run
        self.run = self.stack.enter_context(RunDir(Path(scratch) / "worker-bundle"))
        if chief.resume:  # every worker resumes from the chief's checkpoint (shared disk)
            self.run.adopt_progress(chief.staging)

    # -- the model -------------------------------------------------------------------------------

    def build(self) -> None:
        """Datasets, controls and the model compiled for the phase to (go on) train; on
        --resume, the weights, optimizer state and best weights exactly where the run stopped."""
        from cnnclf.training.callbacks import TrainingControls
        from cnnclf.training.distribute import steps_per_execution

        self.augment_where, self.train_ds, self.val_ds = make_datasets(
            self.config, self.dataset, self.stores, self.placement
        )
        previous = self.previous = self.run.progress
        self.done = previous["completed_epochs"] if previous else 0
        self.scale = self.placement.replicas if self.config.train.scale_learning_rate else 1
        self.controls = TrainingControls(
            self.config.train,
            previous["controls"] if previous else None,
            self.plan[0].learning_rate * self.scale,
        )
        lr_find.remember(self)  # learning_rate: auto's rates, for a resumed run
        self.current = len(self.controls.state.get("phase_starts", [0])) - 1  # to go on with
        self._build_model()
        batches = self.stores["train"].used_images()
        self.executions = steps_per_execution(
            self.config.train.steps_per_execution,
            self.placement.devices,
            math.ceil(batches / self.config.data.batch_size),
        )
        note = self.compile_for(self.plan[self.current])
        # What runs, not what was asked: Keras falls back to no XLA, with a warning, for a model
        # with a layer XLA cannot compile.
        self.jit_compile = (
            bool(self.model.jit_compile) if self.keras_jit else self.placement.jit_compile
        )
        self.controls.set_model(self.model)  # also when every epoch is done and fit never runs
        if previous:
            self._restore()
        self._log_model(note)
        self._make_callbacks()

    def _build_model(self) -> None:
        from cnnclf.data.augment import augmenting_model
        from cnnclf.model.build import build_model
        from cnnclf.model.transfer import copy_features
        from cnnclf.training.distribute import compile_replica_forward

        config, placement, start = self.config, self.placement, self.setup.start
        with self.strategy.scope():
            model = build_model(
                config,
                len(self.dataset.class_names),
                self.spec.channels,
                placement.precision,
                start.weights.path if start.weights else None,
                multi_label=self.multi_label,
            )
            if start.init_from and not self.previous:
                copy_features(model, start.init_from)
                log.info("feature layers copied from %s", start.init_from)
            self.saved = model  # what the bundle holds; `model` is what fit trains (weights shared)
            if self.augment_where == "step":
                model = augmenting_model(
                    self.saved, config.augment, self.spec.image_size, config.train.seed
                )
            # Keras' jit_compile=True compiles the whole step, which under a tf.distribute
            # strategy includes the cross-replica gradient sum that XLA cannot hold: there only
            # each replica's forward and backward pass is compiled.
            self.keras_jit = placement.jit_compile and placement.strategy in (
                "default",
                "one_device",
            )
            if placement.jit_compile and not self.keras_jit:
                model = compile_replica_forward(model)
        self.model = model

    def compile_for(self, phase: Phase) -> str | None:
        """Freezes or unfreezes what `phase` says and compiles again, as Keras needs after a
        change of `trainable`; returns what the phase trains, to log."""
        from cnnclf.model.build import make_optimizer, multi_label_metrics
        from cnnclf.model.transfer import apply_phase

        placement = self.placement
        with self.strategy.scope():
            note = apply_phase(self.saved, phase)
            self.model.compile(
                optimizer=make_optimizer(
                    self.config, placement.precision, placement.replicas, phase.learning_rate
                ),
                loss=self._loss(),
                metrics=multi_label_metrics() if self.multi_label else ["accuracy"],
                steps_per_execution=self.executions,
                jit_compile=self.keras_jit,
            )
        return note

    def _loss(self):
        """The compiled loss: the configured one, or for a multi-label model binary
        cross-entropy with each class's positive weight (`build.multi_label_loss`)."""
        from cnnclf.model.build import multi_label_loss

        return multi_label_loss(self.positive_weights) if self.multi_label else self.setup.loss

    @property
    def class_weight(self) -> dict[int, float] | None:
        """Keras' `class_weight` for fit; a multi-label model weighs classes in its loss."""
        return None if self.multi_label else self.setup.class_weight

    def _restore(self) -> None:
        from cnnclf.training.checkpoint import restore

        with self.strategy.scope():
            restore(self.model, self.controls, *self.run.load_checkpoint())
        log.info("resuming after epoch %d of %d", self.done, planned_epochs(self.config))

    def _log_model(self, note: str | None) -> None:
        total = planned_epochs(self.config)
        trainable = sum(math.prod(w.shape) for w in self.model.trainable_weights)
        log.info(
            "model: %s parameters (%s trainable now); %d epoch%s of batch %d; cache: %s",
            f"{self.model.count_params():,}",
            f"{trainable:,}",
            total,
            "" if total == 1 else "s",
            self.config.data.batch_size,
            self.stores["train"].store.where,
        )
        if self.augment_where:
            log.info(
                "augmentation: in the %s",
                "training step" if self.augment_where == "step" else "input pipeline",
            )
        if note and not self.previous:
            log.info("%s", note)

    def _make_callbacks(self) -> None:
        import keras

        from cnnclf.training.checkpoint import EpochCheckpoint

        train, previous = self.config.train, self.previous
        self.checkpoint = EpochCheckpoint(
            self.run,
            self.config.to_dict(),
            self.controls,
            previous["history"] if previous else None,
            train.checkpoint_every_epochs,
            train.checkpoint_every_minutes,
        )
        progress = self.setup.progress
        self.verbosity = (1 if sys.stdout.isatty() else 2) if progress == "auto" else progress
        multi_worker = self.placement.strategy == "multi_worker"
        self.extra_callbacks = (
            [keras.callbacks.TensorBoard(log_dir=str(self.run.logs_dir))]
            if train.tensorboard and not multi_worker
            else []
        )
        if train.tensorboard and multi_worker:
            log.warning(
                "warning: train.tensorboard is not supported with multi_worker yet; "
                "no logs are written"
            )

    # -- training --------------------------------------------------------------------------------

    def fit(self) -> None:
        """Trains phase by phase, as fastai's `fine_tune`: the first phase (the head, when a
        backbone is frozen), then each next one from the best weights so far, recompiled for
        what it trains. A resumed run goes on in the phase it stopped in."""
        for index in range(self.current, len(self.plan)):
            if index > self.current:
                self.begin_next_phase(self.plan[index])
            self.fit_phase(index)
        self.run.wait()  # the last checkpoint is on disk (or its failure raised) before publishing
        self.best_epoch = self.controls.finish()
        if self.best_epoch is not None:
            log.info(
                "keeping the weights of epoch %d (best %s)",
                self.best_epoch,
                self.controls.best_monitor,
            )

    def begin_next_phase(self, phase: Phase) -> None:
        if self.controls.best_weights is not None:
            self.model.set_weights(self.controls.best_weights)
        phase = lr_find.resolve_phase(self, phase)  # fine_tune.learning_rate: auto
        log.info("%s", self.compile_for(phase))

    def fit_phase(self, index: int) -> None:
        """Trains phase `index` to its last epoch, or until early stopping ends it."""
        phase = self.plan[index]
        self.controls.begin_phase(
            index,
            phase.learning_rate * self.scale,
            len(self.history.get("epoch", [])),
            phase.epochs,
        )
        end = self.controls.state["phase_starts"][index] + phase.epochs
        if self.done >= end or self.controls.stopped_early:
            return  # resumed after this phase ended (or stopped early)
        self._fit_until(end)
        self.run.wait()  # the last checkpoint is on disk (or its failure raised)
        self.done = len(self.history.get("epoch", []))
        if self.controls.nan_epoch is not None:
            raise CnnclfError(
                f"training stopped: the loss became NaN in epoch "
                f"{self.controls.nan_epoch}; lower train.learning_rate or check the "
                "data"
            )
        stopping = self.controls.early_stopping
        if stopping is not None and self.controls.stopped_early:
            log.info(
                "early stopping: %s did not improve for %d epochs%s",
                stopping.monitor,
                stopping.patience,
                "; fine-tuning next" if index + 1 < len(self.plan) else "",
            )

    def _fit_until(self, end: int) -> None:
        callbacks = [*self.controls.callbacks, self.checkpoint, *self.setup.callbacks]
        if self.placement.strategy == "multi_worker":
            from cnnclf.training.multiworker import MultiWorkerLoop

            MultiWorkerLoop(
                self.model,
                self.strategy,
                loss=self.setup.loss,
                global_batch_size=self.config.data.batch_size,
                class_weight=self.class_weight,
                multi_label_loss=self._loss() if self.multi_label else None,
            ).fit(
                self.train_ds,
                self.val_ds,
                epochs=end,
                initial_epoch=self.done,
                callbacks=callbacks,
                log=log.info,
            )
            return
        self.model.fit(
            self.train_ds,
            validation_data=self.val_ds,
            epochs=end,
            initial_epoch=self.done,
            shuffle=False,
            verbose=self.verbosity,
            class_weight=self.class_weight,
            callbacks=[*callbacks, *self.extra_callbacks],
        )

    @property
    def history(self) -> dict:
        """Per-epoch metrics, including the epochs before a resume."""
        return self.checkpoint.history

    # -- after training --------------------------------------------------------------------------

    def validate(self) -> None:
        # Calibration first: the threshold rule and the metrics see calibrated probabilities.
        self.calibration = calibrate(
            self.saved,
            self.val_ds,
            self.config,
            self.stores["validation"].used_images(),
            "multi_label" if self.multi_label else "binary" if self.binary else "categorical",
        )
        self.threshold, self.metrics = threshold_and_metrics(
            self.saved,
            self.val_ds,
            self.config,
            self.dataset.class_names,
            self.stores["validation"].used_images(),
            self.multi_label,
            calibration=self.calibration,
        )
        if warning := small_validation_warning(
            self.used["validation"], self.dataset.validation_source
        ):
            log.warning("%s", warning)

    @property
    def binary(self) -> bool:
        return len(self.dataset.class_names) == 2 and not self.multi_label

    def publish(self) -> TrainResult:
        """Writes the bundle in the run's staging folder, then renames it into place."""
        from cnnclf.bundle.writer import write_bundle

        started = self.setup.started
        seconds = time.monotonic() - started
        history = dict(self.history)
        final = final_metrics(history, self.best_epoch)
        self.run.write_bundle(
            lambda folder: write_bundle(
                folder,
                self.bundle_contents(history, final, seconds),
                after_model=lambda: fault_point("bundle.model_written"),
            )
        )
        bundle_dir = self.run.publish()
        skipped = dict(self.skipped.reasons)
        if not self.placement.is_chief:
            log.info("worker done; the chief writes the bundle")
            return TrainResult(None, history, skipped, time.monotonic() - started, final)
        log.info("saved bundle to %s", bundle_dir)
        return TrainResult(
            bundle_dir,
            history,
            skipped,
            seconds,
            final,
            self.used["train"],
            self.used["validation"],
            image_counts(self),
        )

    def bundle_contents(self, history: dict, final: dict, seconds: float):
        from cnnclf.bundle.writer import BundleContents

        preprocessing = Preprocessing(
            self.spec,
            self.config.augment.rescale,
            "multi_label" if self.multi_label else "binary" if self.binary else "categorical",
            self.threshold if self.binary else None,
            tuple(self.threshold) if self.multi_label else None,
        )
        return BundleContents(
            model=self.saved,
            config=self.config,
            class_indices=self.dataset.class_indices,
            preprocessing=preprocessing,
            history=history,
            metrics=metrics_json(self.config, self.dataset, self.metrics),
            record=dataclasses.replace(
                run_record(self, history, final, seconds), calibration=self.calibration
            ),
        )
