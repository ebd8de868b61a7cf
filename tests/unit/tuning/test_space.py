"""The search space: every draw becomes a config that validates (cnnclf/tuning/space.py)."""

import pytest

from cnnclf.config import load_config
from cnnclf.errors import ConfigError
from cnnclf.tuning.space import FULL_STRENGTH, overrides, suggest

optuna = pytest.importorskip("optuna")


def test_defaults_tune_learning_rate_widths_dropout_augmentation_and_batch():
    config = load_config(None)
    trial = optuna.trial.FixedTrial(
        {
            "learning_rate": 3e-3,
            "dense_units": 256,
            "dropout": 0.3,
            "augment_strength": 0.5,
            "batch_size": 64,
        }
    )
    params = suggest(trial, config)
    assert set(params) == {
        "learning_rate",
        "dense_units",
        "dropout",
        "augment_strength",
        "batch_size",
    }
    tuned = load_config(None, overrides(params, config))
    assert tuned.train.learning_rate == 3e-3
    assert tuned.model.dense_units == [256] and tuned.model.dropout == 0.3
    assert tuned.augment.rotation_range == FULL_STRENGTH["rotation_range"] / 2
    assert tuned.augment.zoom_range == 0.15
    assert tuned.data.batch_size == 64


def test_a_key_set_to_null_or_empty_is_not_tuned():
    config = load_config(
        None,
        [
            "tune.learning_rate=null",
            "tune.batch_size=[]",
            "tune.dense_units=[]",
            "model.dense_units=[]",
        ],
    )
    params = suggest(optuna.trial.FixedTrial({"augment_strength": 0.0}), config)
    assert params == {"augment_strength": 0.0}  # dropout too: no Dense layer to act on


def test_backbone_choice_only_beside_a_backbone():
    sets = [
        "model.backbone=mobilenet_v3_small",
        "model.backbone.weights=none",
        "tune.backbones=[mobilenet_v3_small, efficientnet_v2_b0]",
    ]
    config = load_config(None, sets)
    trial = optuna.trial.FixedTrial(
        {
            "learning_rate": 1e-3,
            "dense_units": 64,
            "dropout": 0.1,
            "augment_strength": 0.0,
            "batch_size": 16,
            "backbone": "efficientnet_v2_b0",
        }
    )
    tuned = load_config(None, [*sets, *overrides(suggest(trial, config), config)])
    assert tuned.model.backbone.name == "efficientnet_v2_b0"
    assert tuned.model.backbone.weights == "none"
    assert "backbone" not in suggest(trial, load_config(None, sets[2:]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tune.learning_rate=[0.1, 0.01]", r"tune.learning_rate: must be null or \[low, high\]"),
        (
            "tune.learning_rate=[0, 0.01]",
            r"tune.learning_rate: must be null or \[low, high\] with 0 <",
        ),
        ("tune.batch_size=[16, 16]", r"tune.batch_size: must be a list of distinct integers"),
        ("tune.backbones=[resnet50]", r"tune.backbones\[0\]: unknown backbone"),
        ("tune.metric=accuracy", r"tune.metric: must be"),
    ],
)
def test_a_bad_search_space_is_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
