"""Stopping bad trials early, from each epoch's validation metric.

The callback does not raise inside Keras' `fit`: an exception there would leave the trial's
run folder half-written (resumable, not published). It stops training instead, so a pruned
trial still publishes its bundle like any run, and the worker then tells Optuna it was pruned.
"""

from __future__ import annotations

from typing import Any

PRUNERS = ("median", "halving", "none")


def make_pruner(name: str, n_trials: int) -> Any:
    """An Optuna pruner by its CLI name.

    median: stop a trial whose metric after an epoch is worse than the median of earlier trials
    at that epoch (after a few trials and the first epoch); halving: successive halving (ASHA),
    which keeps the best 1/reduction_factor of trials at each rung; none: never stop a trial.
    """
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=min(5, max(1, n_trials // 4)), n_warmup_steps=1
        )
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def pruning_callback(trial: Any, metric: str) -> Any:
    """A Keras callback that reports `metric` after each epoch and stops a trial to prune.

    Its `pruned_at` is the 1-based epoch it stopped after, or None.
    """
    import keras

    class ReportToTrial(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.pruned_at: int | None = None

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = (logs or {}).get(metric)
            if value is None:
                return
            trial.report(float(value), step=epoch + 1)
            last = epoch + 1 >= (self.params or {}).get("epochs", float("inf"))
            if not last and trial.should_prune():  # a trial that has finished is not pruned
                self.pruned_at = epoch + 1
                self.model.stop_training = True

    return ReportToTrial()
