"""Early stopping, best-weights keeping, learning-rate schedules and the NaN-loss stop, as one
resumable callback.

Keras' own EarlyStopping and ReduceLROnPlateau keep their counters in private attributes that
`on_train_begin` resets, so a resumed run would forget them. This callback keeps its whole state
in a small JSON-ready dict (`state`), which the checkpoint saves every epoch, so a run resumed
after a crash stops, keeps the best weights and lowers the learning rate exactly as an
uninterrupted run would have.
"""

from __future__ import annotations

import math

import keras

from cnnclf.training.checkpoint import snapshot


def _improved(value, best, monitor: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    if "loss" in monitor:
        return value < best - min_delta
    return value > best + min_delta


class TrainingControls(keras.callbacks.Callback):
    """Implements train.early_stopping, train.keep_best and train.lr_schedule.

    Args:
        train_config: a `cnnclf.config.TrainConfig`.
        state: a `state` dict from an interrupted run, or None to start fresh.
        base_learning_rate: the starting rate (train.learning_rate, scaled by the replica count
            when train.scale_learning_rate is on).
    """

    def __init__(
        self, train_config, state: dict | None = None, base_learning_rate: float | None = None
    ):
        super().__init__()
        self.config = train_config
        self.base_learning_rate = base_learning_rate or train_config.learning_rate
        self.phase_epochs = train_config.epochs  # of the current phase (see begin_phase)
        # The best epoch's weights (keep_best, early_stopping.restore_best_weights) stay in
        # memory; the checkpoint commits them with the epoch, so a kill can never leave a
        # best-weights file newer than the progress that names it.
        self.best_weights: list | None = None
        # The epoch whose loss was NaN or infinite, once one was (not saved: such an epoch is
        # never committed, so a resume starts from the last good one).
        self.nan_epoch: int | None = None
        stopping = train_config.early_stopping or {}
        self.best_monitor = train_config.keep_best or (
            stopping.get("monitor") if stopping.get("restore_best_weights") else None
        )
        self.state = state or {
            "best": None,
            "best_epoch": None,
            "stop_best": None,
            "wait": 0,
            "plateau_best": None,
            "plateau_wait": 0,
            "learning_rate": self.base_learning_rate,
            "stopped_early": False,
        }

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
        self.state.update(
            stop_best=None,
            wait=0,
            plateau_best=None,
            plateau_wait=0,
            learning_rate=base_learning_rate,
            stopped_early=False,
        )
        return True

    def on_epoch_begin(self, epoch, logs=None):
        if self.config.lr_schedule == "cosine":
            lr0, lr_min = self.base_learning_rate, self.config.min_learning_rate
            start = self.state.get("phase_starts", [0])[-1]
            progress = (epoch - start) / max(1, self.phase_epochs - 1)
            self.state["learning_rate"] = lr_min + 0.5 * (lr0 - lr_min) * (
                1 + math.cos(math.pi * progress)
            )
        self.model.optimizer.learning_rate.assign(self.state["learning_rate"])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            # Checked here rather than after every batch (Keras' TerminateOnNaN): a callback
            # with a per-batch hook makes Keras wait for every step's loss, which keeps an
            # accelerator idle between steps. A NaN epoch costs one epoch more, no more.
            self.nan_epoch = epoch + 1
            self.model.stop_training = True
            return
        logs["learning_rate"] = float(self.state["learning_rate"])
        if self.best_monitor and self.best_monitor in logs:
            value = float(logs[self.best_monitor])
            if _improved(value, self.state["best"], self.best_monitor):
                self.state["best"], self.state["best_epoch"] = value, epoch + 1
                self.best_weights = snapshot(self.model.weights)
        if self.config.lr_schedule == "reduce_on_plateau" and "val_loss" in logs:
            if _improved(float(logs["val_loss"]), self.state["plateau_best"], "val_loss"):
                self.state["plateau_best"], self.state["plateau_wait"] = float(logs["val_loss"]), 0
            else:
                self.state["plateau_wait"] += 1
                if self.state["plateau_wait"] >= self.config.lr_patience:
                    self.state["learning_rate"] = max(
                        self.config.min_learning_rate,
                        self.state["learning_rate"] * self.config.lr_factor,
                    )
                    self.state["plateau_wait"] = 0
        stopping = self.config.early_stopping
        if stopping and stopping["monitor"] in logs:
            value = float(logs[stopping["monitor"]])
            if _improved(
                value, self.state["stop_best"], stopping["monitor"], stopping["min_delta"]
            ):
                self.state["stop_best"], self.state["wait"] = value, 0
            else:
                self.state["wait"] += 1
                if self.state["wait"] >= stopping["patience"]:
                    self.state["stopped_early"] = True
                    self.model.stop_training = True

    def finish(self) -> int | None:
        """Loads the best weights if asked to; returns the epoch they come from."""
        if self.best_monitor and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            return self.state["best_epoch"]
        return None
