"""The trial callback prunes between epochs, never after the last one: a trial that has run
all its epochs is complete, whatever the pruner thinks of its figure."""

from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.slow  # imports Keras


class Trial:
    def __init__(self):
        self.reports = []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return True  # a pruner that wants every trial gone


def test_pruned_between_epochs_but_not_after_the_last():
    from cnnclf.tuning.pruning import pruning_callback

    for epochs, pruned_at in ((3, 1), (1, None)):
        trial, model = Trial(), SimpleNamespace(stop_training=False)
        callback = pruning_callback(trial, "val_accuracy")
        callback.set_params({"epochs": epochs})
        callback.set_model(model)
        callback.on_epoch_end(0, {"val_accuracy": 0.7})
        assert trial.reports == [(1, 0.7)]
        assert callback.pruned_at == pruned_at and model.stop_training is (pruned_at is not None)
