"""Per-epoch checkpoints, so a killed, interrupted or out-of-space run resumes where it stopped.

After an epoch (every `train.checkpoint_every_epochs`) the weights, the optimizer's state and
the best epoch's weights are snapshotted (`snapshot`: no copy at all when taken) and handed to
the run directory (`rundir.RunDir`), which moves them to the host, writes and commits them in a
background thread while the next epoch trains. Copying to NumPy first, as before, blocked the
training loop for two host copies of everything, which for a large model with Adam's moments
is a noticeable pause every epoch. What is on disk and in which order is the run directory's
business; this module decides only what a checkpoint holds and how a model is restored from
one.
"""

from __future__ import annotations

import copy
import time

import keras


def snapshot(variables) -> list:
    """The current values of `variables`, frozen, for the cost of reading them.

    A TensorFlow read shares the variable's buffer; the next update writes into a fresh one
    (copy on write, on the variable's own device), so the snapshot stays as it was. NumPy
    reads the tensors without a copy on CPU (`np.asarray`), in the writer thread; on a GPU
    that is where the one device-to-host copy happens.
    """
    return [v.value.read_value() for v in variables]


def restore(model, controls, arrays: dict, best: dict | None) -> None:
    """Loads a checkpoint's weights, optimizer state and best weights into a compiled model."""
    model.set_weights([arrays[f"w{i}"] for i in range(int(arrays["n_weights"]))])
    model.optimizer.build(model.trainable_variables)
    slots = [arrays[f"o{i}"] for i in range(int(arrays["n_optimizer"]))]
    for variable, value in zip(model.optimizer.variables, slots):
        variable.assign(value)
    if best is not None:
        controls.best_weights = [best[f"w{i}"] for i in range(len(best))]


class EpochCheckpoint(keras.callbacks.Callback):
    """Commits weights, optimizer state, history and the controls' state after epochs.

    After every `every_epochs`-th epoch, after any epoch ending `every_minutes` or more after
    the last commit, and always after the last epoch of a fit or one that stops training (early
    stopping). A run stopped in between resumes from the last commit, having lost the epochs
    since: on a fast accelerator an epoch can take less time than saving it.

    Args:
        run: the `rundir.RunDir` the run writes into.
        config: the resolved config as a dict (a resume must use the same one).
        controls: the `TrainingControls` whose state (and best weights) are saved alongside.
        history: per-epoch metrics of epochs completed before this fit (when resuming).
        every_epochs: train.checkpoint_every_epochs.
        every_minutes: train.checkpoint_every_minutes, or None.
    """

    def __init__(
        self,
        run,
        config: dict,
        controls,
        history: dict | None = None,
        every_epochs: int = 1,
        every_minutes: float | None = None,
    ):
        super().__init__()
        self.run = run
        self.config = config
        self.controls = controls
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.every_epochs = every_epochs
        self.every_minutes = every_minutes
        self._mark: float | None = None
        self._committed_at = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        if self._mark is None:
            self._mark = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        # Wall time since the previous epoch ended: training, validation and checkpointing,
        # everything a user waits for. This is what speed benchmarks read.
        seconds, self._mark = now - (self._mark if self._mark is not None else now), now
        if self.controls.nan_epoch is not None:
            return  # weights that produced a NaN loss are not worth resuming from
        self.run.wait()  # the previous commit; raises if it failed (a full disk)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.history.setdefault("epoch", []).append(epoch + 1)
        self.history.setdefault("epoch_seconds", []).append(round(seconds, 4))
        if not self._due(epoch + 1):
            return
        self._committed_at = time.monotonic()
        weights = snapshot(self.model.weights)
        slots = snapshot(self.model.optimizer.variables)
        arrays = {
            "n_weights": len(weights),
            "n_optimizer": len(slots),
            **{f"w{i}": w for i, w in enumerate(weights)},
            **{f"o{i}": s for i, s in enumerate(slots)},
        }
        best = None
        if self.controls.best_weights is not None:
            best = {
                "epoch": self.controls.state["best_epoch"],
                "arrays": {f"w{i}": w for i, w in enumerate(self.controls.best_weights)},
            }
        progress = {
            "history": copy.deepcopy(self.history),
            "controls": copy.deepcopy(self.controls.state),
            "config": self.config,
        }
        self.run.commit_checkpoint_async(epoch + 1, arrays, progress, best, on_failure=self._stop)

    def _due(self, epoch: int) -> bool:
        last = self.params.get("epochs") if isinstance(self.params, dict) else None
        return (
            epoch % self.every_epochs == 0
            or not last
            or epoch >= last
            or bool(getattr(self.model, "stop_training", False))
            or (
                self.every_minutes is not None
                and time.monotonic() - self._committed_at >= 60 * self.every_minutes
            )
        )

    def _stop(self, exc) -> None:
        # Called from the writer thread: Keras checks this flag after every batch, so a full
        # disk stops training within a step instead of after an epoch that cannot be saved.
        self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.run.wait()
