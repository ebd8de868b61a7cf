"""The config schema through its public API and `cnnclf config`."""

from pathlib import Path

import pytest
import yaml

from cnnclf.config import load_config, reference_yaml, schema_keys
from cnnclf.errors import ConfigError
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_follow_the_tutorial():
    config = load_config(None)
    assert config.data.image_size == [64, 64]
    assert config.data.batch_size == 32
    assert config.augment.rescale == pytest.approx(1 / 255)
    assert config.model.conv_blocks == [{"filters": 32, "kernel_size": 3, "pool_size": 2}]
    assert config.model.dense_units == [128]
    assert config.train.optimizer == "adam"
    assert config.train.loss == "auto"


def test_overrides_parse_yaml_values_and_reach_nested_keys():
    config = load_config(None, ["train.epochs=3", "data.image_size=[96, 128]",
                                "augment.horizontal_flip=true", "augment.rescale=1/127.5",
                                "model.conv_blocks.0.filters=64", "data.test_dir=null"])
    assert config.train.epochs == 3
    assert config.data.image_size == [96, 128]
    assert config.augment.horizontal_flip is True
    assert config.augment.rescale == pytest.approx(1 / 127.5)
    assert config.model.conv_blocks[0]["filters"] == 64
    assert config.data.test_dir is None


def test_override_beats_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 10\n  seed: 3\n")
    config = load_config(path, ["train.epochs=2"])
    assert (config.train.epochs, config.train.seed) == (2, 3)


@pytest.mark.parametrize("override, message", [
    ("train.epochz=3", "train.epochz: unknown key; did you mean 'epochs'?"),
    ("trian.epochs=3", "trian: unknown key; did you mean 'train'?"),
    ("train.epochs=ten", "train.epochs: must be a positive integer, got 'ten'"),
    ("train.epochs=0", "train.epochs: must be a positive integer, got 0"),
    ("train.epochs=true", "train.epochs: must be a positive integer, got True"),
    ("data.image_size=[64]", "data.image_size: must be [height, width]"),
    ("data.color_mode=rgba", "data.color_mode: must be one of 'rgb', 'grayscale'"),
    ("augment.rescale=1/0", "augment.rescale: must be a number or a fraction"),
    ("train.threshold=1.5", "train.threshold: must be a number in (0, 1)"),
    ("model.conv_blocks.0.kernel=3", "model.conv_blocks[0].kernel: unknown key; did you mean "
                                     "'kernel_size'?"),
    ("train.image_size=[8,8]", "train.image_size: unknown key; did you mean 'data.image_size'?"),
    ("epochs=3", "--set epochs: name a key inside a section"),
    ("train.epochs", "--set 'train.epochs': must look like section.key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_image_too_small_for_conv_stack():
    with pytest.raises(ConfigError, match=r"data.image_size: \[8, 8\] is too small"):
        load_config(None, ["data.image_size=[8,8]", "model.conv_blocks=[32, 64]"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+, column \d+: invalid YAML"):
        load_config(path)


def test_reference_config_is_generated_from_the_schema():
    committed = (ROOT / "configs" / "reference.yaml").read_text(encoding="utf-8")
    assert committed == reference_yaml(), (
        "configs/reference.yaml is stale: cnnclf config --reference > configs/reference.yaml")
    raw = yaml.safe_load(committed)
    assert load_config(ROOT / "configs" / "reference.yaml") == load_config(None)
    documented = [f"{s}.{k}" for s, keys in raw.items() for k in keys]
    assert documented == schema_keys()


SHIPPED = sorted(path.name for path in (ROOT / "configs").glob("*.yaml"))


def test_every_config_the_readme_names_is_shipped():
    assert {"demo.yaml", "cats_dogs.yaml", "brain_tumor.yaml", "recommended.yaml",
            "reference.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_validate(name):
    load_config(ROOT / "configs" / name)


def test_cats_dogs_config_is_the_tutorial():
    config = load_config(ROOT / "configs" / "cats_dogs.yaml")
    assert config.data.image_size == [64, 64] and config.data.color_mode == "rgb"
    assert config.augment.shear_range == 0.2 and config.augment.zoom_range == 0.2
    assert config.augment.horizontal_flip and config.augment.rescale == pytest.approx(1 / 255)
    assert config.data.interpolation == "nearest"  # load_img's default
    assert config.model.conv_blocks == [{"filters": 32, "kernel_size": 3, "pool_size": 2}]
    assert config.model.dense_units == [128]
    assert (config.train.epochs, config.data.batch_size, config.train.optimizer) == (25, 32,
                                                                                     "adam")


def test_config_command_prints_resolved_yaml():
    result = run_cli("config", "--config", ROOT / "configs" / "demo.yaml",
                     "--set", "train.epochs=2")
    assert result.exit_code == 0
    resolved = yaml.safe_load(result.stdout)
    assert resolved["train"]["epochs"] == 2
    assert resolved["data"]["color_mode"] == "grayscale"
    assert load_config(None, []).to_dict().keys() == resolved.keys()
