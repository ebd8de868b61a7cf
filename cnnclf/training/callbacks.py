"""Early stopping, best-weights keeping, learning-rate schedules and the NaN-loss stop, as small
resumable callbacks.

Keras' own EarlyStopping and ReduceLROnPlateau keep their counters in private attributes that
`on_train_begin` resets, so a resumed run would forget them. These callbacks keep theirs in one
JSON-ready dict that they share (`TrainingControls.state`), which the checkpoint saves every
epoch, so a run resumed after a crash stops, keeps the best weights and lowers the learning rate
exactly as an uninterrupted run would have. Each callback owns a few keys of that dict; which
ones, and how a new phase resets them, is the one protocol they share (`ResumableCallback`).
Whether a value improved is decided in one place, `MonitorCallback._is_improvement`, as in
Keras' own monitor callbacks.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from cnnclf.training.checkpoint import snapshot


class ResumableCallback(keras.callbacks.Callback):
    """A callback whose state lives in `controls.state`, saved with every checkpoint.

    Subclasses name the keys they own in `fresh_state` and say which of them a new training
    phase starts afresh in `phase_state`.
    """

    def __init__(self, controls: TrainingControls):
        super().__init__()
        self.controls = controls

    @property
    def state(self) -> dict:
        return self.controls.state

    @classmethod
    def fresh_state(cls, learning_rate: float) -> dict:
        """The keys this callback owns, as a new run starts them."""
        return {}

    @classmethod
    def phase_state(cls, learning_rate: float) -> dict:
        """The keys a new phase starts afresh (the others carry over between phases)."""
        return cls.fresh_state(learning_rate)

    def _epoch_counts(self) -> bool:
        """False for an epoch whose loss was NaN: it teaches no callback anything."""
        return self.controls.nan_epoch is None


class MonitorCallback(ResumableCallback):
    """A callback that follows one logged metric: lower is better for losses, higher otherwise."""

    def __init__(self, controls: TrainingControls, monitor: str, min_delta: float = 0.0):
        super().__init__(controls)
        self.monitor = monitor
        self.min_delta = min_delta

    def _is_improvement(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        if "loss" in self.monitor:
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def _value(self, logs: dict | None) -> float | None:
        """The monitored value of a finished epoch, or None when there is none to follow."""
        if not self._epoch_counts() or not logs or self.monitor not in logs:
            return None
        return float(logs[self.monitor])


class StopOnNaN(ResumableCallback):
    """Stops training at the end of an epoch whose loss is NaN or infinite.

    Checked here rather than after every batch (Keras' TerminateOnNaN): a callback with a
    per-batch hook makes Keras wait for every step's loss, which keeps an accelerator idle
    between steps. A NaN epoch costs one epoch more, no more.
    """

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            # Not saved: such an epoch is never committed, so a resume starts from the last
            # good one.
            self.controls.nan_epoch = epoch + 1
            self.model.stop_training = True


class LearningRateSchedule(ResumableCallback):
    """Sets the optimizer's rate before each epoch (train.lr_schedule `cosine` computes it;
    `constant` and `reduce_on_plateau` keep the saved one) and logs it after."""

    def __init__(self, controls: TrainingControls, schedule: str, min_learning_rate: float):
        super().__init__(controls)
        self.schedule = schedule
        self.min_learning_rate = min_learning_rate

    @classmethod
    def fresh_state(cls, learning_rate: float) -> dict:
        return {"learning_rate": learning_rate}

    def on_epoch_begin(self, epoch, logs=None):
        if self.schedule == "cosine":
            lr0, lr_min = self.controls.base_learning_rate, self.min_learning_rate
            start = self.state.get("phase_starts", [0])[-1]
            progress = (epoch - start) / max(1, self.controls.phase_epochs - 1)
            self.state["learning_rate"] = lr_min + 0.5 * (lr0 - lr_min) * (
                1 + math.cos(math.pi * progress)
            )
        self.model.optimizer.learning_rate.assign(self.state["learning_rate"])

    def on_epoch_end(self, epoch, logs=None):
        if self._epoch_counts() and logs is not None:
            logs["learning_rate"] = float(self.state["learning_rate"])


class KeepBest(MonitorCallback):
    """Keeps the best epoch's weights (train.keep_best, early_stopping.restore_best_weights).

    They stay in memory (`controls.best_weights`); the checkpoint commits them with the epoch,
    so a kill can never leave a best-weights file newer than the progress that names it. The
    best epoch carries over from one phase to the next.
    """

    @classmethod
    def fresh_state(cls, learning_rate: float) -> dict:
        return {"best": None, "best_epoch": None}

    @classmethod
    def phase_state(cls, learning_rate: float) -> dict:
        return {}

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if value is not None and self._is_improvement(value, self.state["best"]):
            self.state["best"], self.state["best_epoch"] = value, epoch + 1
            self.controls.best_weights = snapshot(self.model.weights)


class ReduceOnPlateau(MonitorCallback):
    """train.lr_schedule `reduce_on_plateau`: lowers the rate when val_loss stops improving."""

    def __init__(self, controls: TrainingControls, factor: float, patience: int, minimum: float):
        super().__init__(controls, "val_loss")
        self.factor = factor
        self.patience = patience
        self.minimum = minimum

    @classmethod
    def fresh_state(cls, learning_rate: float) -> dict:
        return {"plateau_best": None, "plateau_wait": 0}

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if value is None:
            return
        if self._is_improvement(value, self.state["plateau_best"]):
            self.state["plateau_best"], self.state["plateau_wait"] = value, 0
            return
        self.state["plateau_wait"] += 1
        if self.state["plateau_wait"] >= self.patience:
            self.state["learning_rate"] = max(
                self.minimum, self.state["learning_rate"] * self.factor
            )
            self.state["plateau_wait"] = 0


class EarlyStopping(MonitorCallback):
    """train.early_stopping: stops a phase when `monitor` has not improved for `patience`."""

    def __init__(self, controls: TrainingControls, monitor: str, min_delta: float, patience: int):
        super().__init__(controls, monitor, min_delta)
        self.patience = patience

    @classmethod
    def fresh_state(cls, learning_rate: float) -> dict:
        return {"stop_best": None, "wait": 0, "stopped_early": False}

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if value is None:
            return
        if self._is_improvement(value, self.state["stop_best"]):
            self.state["stop_best"], self.state["wait"] = value, 0
            return
        self.state["wait"] += 1
        if self.state["wait"] >= self.patience:
            self.state["stopped_early"] = True
            self.model.stop_training = True


# Every key of the saved state comes from these, whether or not the run uses them, so the state
# has the same shape in every checkpoint (and an older checkpoint resumes in a newer cnnclf).
_STATE_OWNERS = (KeepBest, EarlyStopping, ReduceOnPlateau, LearningRateSchedule)


class TrainingControls:
    """train.early_stopping, train.keep_best and train.lr_schedule, as the callbacks that fit
    runs (`callbacks`) and the state they share.

    Args:
        train_config: a `cnnclf.config.TrainConfig`.
        state: a `state` dict from an interrupted run, or None to start fresh.
        base_learning_rate: the starting rate (train.learning_rate, scaled by the replica count
            when train.scale_learning_rate is on).
    """

    def __init__(
        self, train_config, state: dict | None = None, base_learning_rate: float | None = None
    ):
        self.base_learning_rate = base_learning_rate or train_config.learning_rate
        self.phase_epochs = train_config.epochs  # of the current phase (see begin_phase)
        self.best_weights: list | None = None  # the best epoch's, while KeepBest runs
        self.nan_epoch: int | None = None  # the epoch whose loss was NaN, once one was
        self.model: Any = None  # the keras.Model fit trains (see set_model)
        self.state = state or _fresh_state(self.base_learning_rate)
        self.callbacks: list[ResumableCallback] = [
            StopOnNaN(self),
            LearningRateSchedule(self, train_config.lr_schedule, train_config.min_learning_rate),
        ]
        stopping = train_config.early_stopping
        self.best_monitor = train_config.keep_best or (
            stopping.monitor if stopping and stopping.restore_best_weights else None
        )
        if self.best_monitor:
            self.callbacks.append(KeepBest(self, self.best_monitor))
        if train_config.lr_schedule == "reduce_on_plateau":
            self.callbacks.append(
                ReduceOnPlateau(
                    self,
                    train_config.lr_factor,
                    train_config.lr_patience,
                    train_config.min_learning_rate,
                )
            )
        self.early_stopping: EarlyStopping | None = None
        if stopping:
            self.early_stopping = EarlyStopping(
                self, stopping.monitor, stopping.min_delta, stopping.patience
            )
            self.callbacks.append(self.early_stopping)

    def set_model(self, model) -> None:
        self.model = model
        for callback in self.callbacks:
            callback.set_model(model)

    @property
    def stopped_early(self) -> bool:
        return bool(self.state["stopped_early"])

    def begin_phase(
        self, index: int, base_learning_rate: float, first_epoch: int, epochs: int
    ) -> bool:
        """Starts phase `index` (0: train.epochs, 1: train.fine_tune) at `first_epoch`.

        A new phase starts its own learning-rate schedule at `base_learning_rate` and its own
        early-stopping and plateau counters (fine-tuning moves the loss to another scale); the
        best epoch and its weights carry over. Returns False when the state already is in
        this phase (a resumed run), which then goes on exactly where it stopped.
        """
        self.base_learning_rate = base_learning_rate
        self.phase_epochs = epochs
        starts = self.state.setdefault("phase_starts", [0])
        if index < len(starts):
            return False
        starts.append(first_epoch)
        for owner in _STATE_OWNERS:
            self.state.update(owner.phase_state(base_learning_rate))
        return True

    def finish(self) -> int | None:
        """Loads the best weights if asked to; returns the epoch they come from."""
        if self.best_monitor and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            return self.state["best_epoch"]
        return None


def _fresh_state(learning_rate: float) -> dict:
    state: dict = {}
    for owner in _STATE_OWNERS:
        state.update(owner.fresh_state(learning_rate))
    return state
