"""The multi-label head and loss (model/build.py) and how training reads class weights and
monitors for it (training/validation.py)."""

from types import SimpleNamespace

import numpy as np
import pytest

from cnnclf.config import Config
from cnnclf.config.parse import parse_config
from cnnclf.data.layout import Dataset, Split, multi_label_split
from cnnclf.errors import ConfigError
from cnnclf.model.build import loss_for, multi_label_loss, output_layer_for
from cnnclf.training.validation import check_monitors, positive_weights


def test_one_sigmoid_per_class_even_for_two_classes_and_binary_cross_entropy():
    assert output_layer_for(2, multi_label=True) == (2, "sigmoid")
    assert output_layer_for(2) == (1, "sigmoid") and output_layer_for(3) == (3, "softmax")
    config = Config()
    assert loss_for(config, 5, multi_label=True) == "binary_crossentropy"
    wrong = SimpleNamespace(train=SimpleNamespace(loss="categorical_crossentropy"))
    with pytest.raises(
        ConfigError, match=r"^train\.loss: categorical_crossentropy does not fit a "
    ):
        loss_for(wrong, 5, multi_label=True)


@pytest.mark.slow  # imports Keras
def test_positive_weights_scale_only_the_positive_term():
    loss = multi_label_loss([3.0, 1.0])
    y = np.array([[1.0, 0.0]], np.float32)
    p = np.array([[0.25, 0.25]], np.float32)
    expected = (-3.0 * np.log(0.25) - np.log(0.75)) / 2
    assert float(loss(y, p)[0]) == pytest.approx(expected, rel=1e-5)
    assert multi_label_loss(None) == "binary_crossentropy"


def _dataset(class_weight):
    train = multi_label_split(["a", "b", "c", "d"], [(0,), (0, 1), (0,), ()])
    dataset = Dataset(["x", "y"], train, train)
    config = SimpleNamespace(train=SimpleNamespace(class_weight=class_weight))
    return config, dataset


def test_balanced_weights_are_negatives_over_positives_and_a_mapping_is_taken_as_given():
    assert positive_weights(*_dataset("balanced")) == [1 / 3, 3.0]
    assert positive_weights(*_dataset({"y": 2.5})) == [1.0, 2.5]
    assert positive_weights(*_dataset("none")) is None


def test_val_auc_is_refused_on_single_label_runs_only():
    config = parse_config({"train": {"keep_best": "val_auc"}})
    with pytest.raises(ConfigError, match=r"^train\.keep_best: val_auc is logged for multi-label"):
        check_monitors(config, multi_label=False)
    check_monitors(config, multi_label=True)
    assert not Dataset(["x", "y"], Split(["a"], [0]), Split(["b"], [1])).multi_label
