"""apply_override (cnnclf/config/overrides.py): `--set section.key=value` on a raw mapping."""

import pytest

from cnnclf.config.overrides import apply_override
from cnnclf.errors import ConfigError


def test_values_are_read_as_yaml():
    raw = {}
    for override in [
        "train.epochs=3",
        "train.learning_rate=3e-4",
        "augment.horizontal_flip=true",
        "data.image_size=[96, 128]",
        "data.test_dir=null",
        "data.train_dir=",
        "train.optimizer= sgd",
    ]:
        apply_override(raw, override)
    assert raw == {
        "train": {"epochs": 3, "learning_rate": 3e-4, "optimizer": "sgd"},
        "augment": {"horizontal_flip": True},
        "data": {"image_size": [96, 128], "test_dir": None, "train_dir": None},
    }


def test_a_later_override_of_the_same_key_wins():
    raw = {"train": {"epochs": 10, "seed": 1}}
    apply_override(raw, "train.epochs=2")
    apply_override(raw, "train.epochs=4")
    assert raw == {"train": {"epochs": 4, "seed": 1}}


def test_a_list_item_is_set_by_index():
    raw = {"model": {"conv_blocks": [{"filters": 8}, {"filters": 16}]}}
    apply_override(raw, "model.conv_blocks.1.filters=64")
    assert raw["model"]["conv_blocks"] == [{"filters": 8}, {"filters": 64}]


def test_a_list_left_at_its_default_starts_from_the_default():
    raw = {}
    apply_override(raw, "model.conv_blocks.0.filters=64")
    assert raw["model"]["conv_blocks"][0]["filters"] == 64


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs", r"^--set 'train.epochs': must look like section.key=value"),
        ("=3", r"must look like section.key=value"),
        ("epochs=3", r"^--set epochs: name a key inside a section, e.g. train.epochs$"),
        ("train.epochs=[1, 2", r"^--set train.epochs: value .* is not valid YAML"),
        ("data.test_dir.x=1", r"^--set data.test_dir.x: data.test_dir is not a section$"),
    ],
)
def test_malformed_overrides_name_what_is_wrong(override, message):
    raw = {"data": {"test_dir": "somewhere"}}
    with pytest.raises(ConfigError, match=message):
        apply_override(raw, override)
