"""The config schema through its public API and `cnnclf config`."""

import dataclasses
import logging
import re
import sys
from pathlib import Path

import pytest
import yaml
from helpers import peak_memory_mb, run_cli, run_process

from cnnclf.config import (
    dump_config,
    estimate_training_memory,
    load_config,
    reference_yaml,
    schema_keys,
)
from cnnclf.errors import ConfigError

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
    config = load_config(
        None,
        [
            "train.epochs=3",
            "data.image_size=[96, 128]",
            "augment.horizontal_flip=true",
            "augment.rescale=1/127.5",
            "model.conv_blocks.0.filters=64",
            "data.test_dir=null",
        ],
    )
    assert config.train.epochs == 3
    assert config.data.image_size == [96, 128]
    assert config.augment.horizontal_flip is True
    assert config.augment.rescale == pytest.approx(1 / 127.5)
    assert config.model.conv_blocks[0]["filters"] == 64
    assert config.data.test_dir is None


def test_a_key_inside_a_section_that_is_off_by_default_starts_it():
    # model.backbone and train.fine_tune are null by default: naming a key inside them on the
    # command line used to fail with "model.backbone is not a section".
    config = load_config(
        None, ["model.backbone.name=mobilenet_v3_small", "model.backbone.weights=none"]
    )
    assert config.model.backbone == {
        "name": "mobilenet_v3_small",
        "weights": "none",
        "trainable": False,
    }
    with pytest.raises(ConfigError, match=r"^train.fine_tune.epochs: is required"):
        load_config(None, ["train.fine_tune.unfreeze=2"])
    assert (
        load_config(None, ["model.backbone=", "model.backbone.name=resnet50_v2"]).model.backbone[
            "name"
        ]
        == "resnet50_v2"
    )


def test_a_key_inside_a_mapping_given_in_short_sets_that_key(tmp_path):
    # `backbone: NAME`, `early_stopping: true` and `fine_tune: false` are mappings in short.
    path = tmp_path / "c.yaml"
    path.write_text(
        "model:\n  backbone: mobilenet_v3_small\n"
        "train:\n  early_stopping: true\n  fine_tune: false\n"
    )
    config = load_config(
        path,
        [
            "model.backbone.trainable=true",
            "train.early_stopping.patience=2",
            "train.fine_tune.epochs=3",
            "train.class_weight.hstripes=2",
        ],
    )
    assert config.model.backbone == {
        "name": "mobilenet_v3_small",
        "weights": "imagenet",
        "trainable": True,
    }
    assert config.train.early_stopping["patience"] == 2
    assert config.train.early_stopping["monitor"] == "val_loss"
    assert config.train.fine_tune["epochs"] == 3
    assert config.train.class_weight == {"hstripes": 2.0}
    # A key inside a value that is no mapping is still refused, naming it.
    for override, where in [
        ("model.backbone.name.x=1", "model.backbone.name"),
        ("data.test_dir.x=1", "data.test_dir"),
    ]:
        with pytest.raises(
            ConfigError,
            match=rf"^--set {re.escape(override[:-2])}: "
            rf"{re.escape(where)} is not a section$",
        ):
            load_config(path, [override])
    with pytest.raises(ConfigError, match=r"^model.backbone.name: unknown backbone"):
        load_config(None, ["model.backbone={name: {x: 1}}"])  # was a TypeError


def test_override_beats_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 10\n  seed: 3\n")
    config = load_config(path, ["train.epochs=2"])
    assert (config.train.epochs, config.train.seed) == (2, 3)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochz=3", "train.epochz: unknown key; did you mean 'epochs'?"),
        ("trian.epochs=3", "trian: unknown key; did you mean 'train'?"),
        ("train.epochs=ten", "train.epochs: must be a positive integer, got 'ten'"),
        ("train.epochs=0", "train.epochs: must be a positive integer, got 0"),
        ("train.epochs=true", "train.epochs: must be a positive integer, got True"),
        ("data.image_size=[64]", "data.image_size: must be [height, width]"),
        ("data.color_mode=rgba", "data.color_mode: must be one of 'rgb', 'grayscale'"),
        ("augment.rescale=1/0", "augment.rescale: must be a number or a fraction"),
        ("train.threshold=1.5", "train.threshold: must be a number in (0, 1)"),
        (
            "model.conv_blocks.0.kernel=3",
            "model.conv_blocks[0].kernel: unknown key; did you mean 'kernel_size'?",
        ),
        (
            "train.image_size=[8,8]",
            "train.image_size: unknown key; did you mean 'data.image_size'?",
        ),
        ("epochs=3", "--set epochs: name a key inside a section"),
        ("train.epochs", "--set 'train.epochs': must look like section.key=value"),
        ("train.jit_compile=xla", "train.jit_compile: must be auto, true or false, got 'xla'"),
        ("train.jit_compile=1", "train.jit_compile: must be auto, true or false, got 1"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_jit_compile_takes_auto_or_a_bool_and_not_with_determinism():
    assert load_config(None).train.jit_compile == "auto"
    assert load_config(None, ["train.jit_compile=true"]).train.jit_compile is True
    assert (
        load_config(None, ["train.jit_compile=false", "train.deterministic=true"]).train.jit_compile
        is False
    )
    with pytest.raises(
        ConfigError,
        match=r"^train.jit_compile: true does not work with "
        r"train.deterministic: true",
    ):
        load_config(None, ["train.jit_compile=true", "train.deterministic=true"])


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
        "configs/reference.yaml is stale: cnnclf config --reference > configs/reference.yaml"
    )
    raw = yaml.safe_load(committed)
    assert load_config(ROOT / "configs" / "reference.yaml") == load_config(None)
    documented = [f"{s}.{k}" for s, keys in raw.items() for k in keys]
    assert documented == schema_keys()


SHIPPED = sorted(path.name for path in (ROOT / "configs").glob("*.yaml"))


def test_every_config_the_readme_names_is_shipped():
    assert {
        "demo.yaml",
        "cats_dogs.yaml",
        "brain_tumor.yaml",
        "recommended.yaml",
        "reference.yaml",
    } <= set(SHIPPED)


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
    assert (config.train.epochs, config.data.batch_size, config.train.optimizer) == (25, 32, "adam")


def test_config_command_prints_resolved_yaml():
    result = run_cli(
        "config", "--config", ROOT / "configs" / "demo.yaml", "--set", "train.epochs=2"
    )
    assert result.exit_code == 0
    resolved = yaml.safe_load(result.stdout)
    assert resolved["train"]["epochs"] == 2
    assert resolved["data"]["color_mode"] == "grayscale"
    assert load_config(None, []).to_dict().keys() == resolved.keys()


# ---------------------------------------------------------------------------------------------
# YAML: numbers as YAML 1.2 writes them, duplicate keys, alias bombs. Files and --set alike.


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("3e-4", "learning_rate", 3e-4),
        ("+1e-3", "learning_rate", 1e-3),
        ("1.5E-3", "learning_rate", 1.5e-3),
        ("1E5", "collective_timeout", 1e5),
        ("-.5e1", "collective_timeout", None),  # a number now, so refused by the range, not as text
    ],
)
def test_scientific_notation_is_a_number_in_files_and_overrides(tmp_path, text, key, expected):
    path = tmp_path / "c.yaml"
    path.write_text(f"train:\n  {key}: {text}\n")
    for load in (lambda: load_config(path), lambda: load_config(None, [f"train.{key}={text}"])):
        if expected is None:
            with pytest.raises(ConfigError, match=rf"train.{key}: must be .*, got -5.0$"):
                load()
        else:
            assert getattr(load().train, key) == pytest.approx(expected)


def test_quoted_scientific_notation_stays_a_string(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: '3e-4'\n")
    with pytest.raises(ConfigError, match=r"train.learning_rate: must be .*, got '3e-4'"):
        load_config(path)


def test_plain_integers_stay_integers():
    config = load_config(None, ["train.epochs=12", "data.batch_size=1_024", "train.seed=0"])
    assert (config.train.epochs, config.data.batch_size, config.train.seed) == (12, 1024, 0)
    with pytest.raises(
        ConfigError,
        match=r"data.batch_size: must be an integer in \[1, 65536\], "
        r"got 1e\+20",
    ):
        load_config(None, ["data.batch_size=1e20"])


def test_resolved_config_reloads_unchanged(tmp_path):
    # dump_config must quote a string that the loader would now read as a number.
    config = load_config(None, ["data.train_dir='1e5'", "train.min_learning_rate=1e-7"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    reloaded = load_config(path)
    assert reloaded.data.train_dir == str(tmp_path / "1e5")  # relative to the file: a string
    assert dataclasses.replace(reloaded, data=config.data) == config


def test_duplicate_key_names_file_line_and_key(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("data:\n  batch_size: 8\ntrain:\n  epochs: 3\n  seed: 1\n\n  epochs: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"config file {path}: line 7: duplicate key train.epochs (first on line 4); keep one"
    )


@pytest.mark.parametrize(
    "text, key",
    [
        (
            "model:\n  conv_blocks:\n    - {filters: 8}\n    - {filters: 8, filters: 16}\n",
            "model.conv_blocks[1].filters",
        ),
        ("train:\n  seed: 1\ntrain:\n  epochs: 2\n", "train"),
    ],
)
def test_duplicate_keys_anywhere_are_refused(tmp_path, text, key):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf": line \d+: duplicate key {re.escape(key)} "):
        load_config(path)


def test_duplicate_key_in_an_override():
    with pytest.raises(
        ConfigError,
        match=r"^--set train.class_weight: duplicate key "
        r"train.class_weight.cat; keep one$",
    ):
        load_config(None, ["train.class_weight={cat: 1, dog: 2, cat: 3}"])


def test_aliases_and_merge_keys_still_work(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "model:\n  conv_blocks:\n    - &block {filters: 8, kernel_size: 3}\n"
        "    - <<: *block\n      filters: 16\n    - *block\n"
    )
    blocks = load_config(path).model.conv_blocks
    assert [b["filters"] for b in blocks] == [8, 16, 8]


def _alias_bomb(levels: int) -> str:
    """'Billion laughs': each anchor lists the previous one 9 times, 9**levels strings in all."""
    anchors = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    anchors += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(anchors)}]"


def test_alias_bomb_is_refused_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(f"train:\n  epochs: {_alias_bomb(9)}\n")
    # "At once": refused before the aliases are expanded, which took 80 s and 3 GB, then a
    # MemoryError. Peak memory tells the two apart on any machine; a stopwatch does not.
    with peak_memory_mb() as peak:
        with pytest.raises(
            ConfigError,
            match=r"bomb.yaml: more than 10000 values, counting each use "
            r"of an alias",
        ):
            load_config(path)
        with pytest.raises(ConfigError, match=r"^--set train.epochs: more than 10000 values"):
            load_config(None, [f"train.epochs={_alias_bomb(9)}"])
    assert peak() < 64, f"peak {peak():.0f} MB: the aliases were expanded"


def test_recursive_alias_and_deep_nesting_are_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("train:\n  epochs: &loop [*loop]\n")
    with pytest.raises(ConfigError, match="more than 10000 values"):
        load_config(path)
    path.write_text("train:\n  epochs: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"loop.yaml: line 2: nested more than 20 levels deep"):
        load_config(path)
    path.write_text("".join(f"{'  ' * level}k{level}:\n" for level in range(30)))
    with pytest.raises(ConfigError, match=r"loop.yaml: line 2\d: nested more than 20 levels"):
        load_config(path)


def test_many_values_are_refused_while_parsing(tmp_path):
    path = tmp_path / "wide.yaml"
    path.write_text("train:\n  epochs: [" + ", ".join(["1"] * 33_000) + "]\n")
    with pytest.raises(ConfigError, match=r"wide.yaml: more than 10000 values"):
        load_config(path)


def test_oversized_config_file_is_refused_unparsed(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 20_000)
    with pytest.raises(
        ConfigError,
        match=r"big.yaml: larger than 100 KB, too large for a "
        r"config",
    ):
        load_config(path)


def test_odd_key_names_keep_the_message_on_one_line(tmp_path):
    path = tmp_path / "odd.yaml"
    path.write_text('train:\n  "epochs\\nseed": 3\n')
    with pytest.raises(ConfigError, match=r"^train.'epochs\\nseed': unknown key"):
        load_config(path)
    path.write_text('train:\n  class_weight: {"a\\nb": 1, "a\\nb": 2}\n')
    with pytest.raises(ConfigError, match=r"duplicate key train.class_weight.'a\\nb' "):
        load_config(path)


def test_long_bad_values_are_shortened_in_the_message():
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"train.epochs={list(range(2000))}"])
    assert len(str(info.value)) < 200 and str(info.value).endswith("...")


# ---------------------------------------------------------------------------------------------
# Numbers must be finite; sizes bounded; a model too large for the machine refused in Python.


@pytest.mark.parametrize(
    "override, message",
    [
        ("augment.rescale=.inf", "augment.rescale: must be a number in (0, 255], got inf"),
        ("augment.rescale=1000", "augment.rescale: must be a number in (0, 255], got 1000"),
        ("augment.rescale=1/0.0", "augment.rescale: must be a number or a fraction"),
        (
            "train.min_learning_rate=.inf",
            "train.min_learning_rate: must be a finite number >= 0, got inf",
        ),
        (
            "train.min_learning_rate=1e400",
            "train.min_learning_rate: must be a finite number >= 0, got inf",
        ),
        (f"train.min_learning_rate={10**400}", "train.min_learning_rate: must be a finite number"),
        (
            "train.min_learning_rate=.nan",
            "train.min_learning_rate: must be a finite number >= 0, got nan",
        ),
        (
            "augment.width_shift_range=.inf",
            "augment.width_shift_range: must be a finite number >= 0",
        ),
        ("augment.height_shift_range=.inf", "augment.height_shift_range: must be a finite number"),
        (
            "train.class_weight={cat: .inf, dog: 1}",
            "train.class_weight.cat: must be a finite number > 0, got inf",
        ),
        (
            "train.early_stopping={min_delta: .inf}",
            "train.early_stopping.min_delta: must be a finite number >= 0",
        ),
        ("train.collective_timeout=.inf", "train.collective_timeout: must be a finite number >= 1"),
        (
            "augment.zoom_range=[0.5, .inf]",
            "augment.zoom_range: must be a number in [0, 1) or [low, high]",
        ),
        (
            "augment.brightness_range=[0.5, .inf]",
            "augment.brightness_range: must be null or [low, high]",
        ),
        ("train.learning_rate=.inf", "train.learning_rate: must be auto or a number in (0, 10]"),
        ("train.threshold=.nan", "train.threshold: must be a number in (0, 1)"),
    ],
)
def test_numbers_must_be_finite(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_non_finite_number_in_a_file(tmp_path):
    path = tmp_path / "inf.yaml"
    path.write_text("augment:\n  rescale: .inf\n")
    with pytest.raises(ConfigError, match=r"^augment.rescale: must be a number in \(0, 255\]"):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "train.seed=1099511627776",
            "train.seed: must be an integer in [0, 4294967295], got 1099511627776",
        ),
        ("train.seed=-1", "train.seed: must be an integer in [0, 4294967295], got -1"),
        ("data.batch_size=65537", "data.batch_size: must be an integer in [1, 65536], got 65537"),
        (
            "data.image_size=[100000, 100000]",
            "data.image_size: must be [height, width] with integers in [8, 8192]",
        ),
        (
            "model.conv_blocks.0.kernel_size=100000",
            "model.conv_blocks[0].kernel_size: must be an integer in [1, 8192], got 100000",
        ),
        (
            "model.conv_blocks.0.pool_size=100000",
            "model.conv_blocks[0].pool_size: must be an integer in [1, 8192]",
        ),
        (
            "model.conv_blocks.0.filters=1e11",
            "model.conv_blocks[0].filters: must be an integer in [1, 65536], got 100000000000.0",
        ),
        (
            "model.conv_blocks.0.filters=100000000000",
            "model.conv_blocks[0].filters: must be an integer in [1, 65536]",
        ),
        (
            "model.dense_units=[128, 100000000]",
            "model.dense_units[1]: must be an integer in [1, 65536], got 100000000",
        ),
    ],
)
def test_sizes_are_bounded(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_kernel_larger_than_the_feature_map_is_refused():
    with pytest.raises(
        ConfigError,
        match=r"^model.conv_blocks\[1\].kernel_size: must be at most "
        r"the side of the 32x32 feature map it convolves "
        r"\(data.image_size after the blocks before it\), "
        r"got 33$",
    ):
        load_config(
            None,
            [
                "model.padding=same",
                "model.conv_blocks=[{filters: 8}, {filters: 8, kernel_size: 33}]",
            ],
        )


# Each far past any machine's memory (> 100 TB), so the key named does not depend on the host.
@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model.dense_units=" + str([65536] * 2000)], "model.dense_units"),
        (
            [
                "data.image_size=[128, 128]",
                "model.padding=same",
                "model.pooling=global_average",
                "model.conv_blocks=[{filters: 65536}, {filters: 65536, kernel_size: 64}]",
            ],
            "model.conv_blocks",
        ),
        (
            [
                "data.image_size=[8192, 8192]",
                "data.color_mode=grayscale",
                "data.batch_size=65536",
                "model.pooling=global_average",
                "model.conv_blocks.0.filters=8",
            ],
            "data.batch_size",
        ),
        (
            [
                "data.image_size=[8192, 8192]",
                "data.batch_size=1",
                "model.pooling=global_average",
                "model.conv_blocks.0.filters=65536",
            ],
            "data.image_size",
        ),
    ],
)
def test_model_too_large_for_memory_is_refused_naming_the_key(overrides, key):
    # Refused by arithmetic on the config: nothing of the model's size is ever allocated.
    with (
        peak_memory_mb() as peak,
        pytest.raises(
            ConfigError,
            match=rf"^{re.escape(key)}: training would need about "
            r"[\d,.]+ GB \(.*\), more than the [\d.]+ GB of "
            r"memory here; use ",
        ),
    ):
        load_config(None, overrides)
    assert peak() < 64, f"peak {peak():.0f} MB while refusing"


def test_memory_estimate_counts_the_keras_parameters():
    # demo.yaml's model, as Keras' count_params() reports it for two classes: 121,345.
    parts = estimate_training_memory(load_config(ROOT / "configs" / "demo.yaml"))
    assert parts["model.conv_blocks"] + parts["model.dense_units"] == 121_345 * 4 * 4
    assert parts["features"] == 5 * 5 * 64
    sgd = estimate_training_memory(
        load_config(ROOT / "configs" / "demo.yaml", ["train.optimizer=sgd"])
    )
    assert sgd["model.dense_units"] * 2 == parts["model.dense_units"]


_CHILD = """
import sys
from cnnclf.cli import main
for args in sys.argv[1:]:
    try:
        main(args.split("|"))
    except SystemExit as exc:
        print(exc.code)
print("tensorflow" in sys.modules, "keras" in sys.modules)
"""


def test_bad_configs_exit_2_with_one_line_and_never_load_tensorflow(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"train:\n  epochs: {_alias_bomb(9)}\n")
    dup = tmp_path / "dup.yaml"
    dup.write_text("train:\n  epochs: 3\n  epochs: 5\n")
    calls = [
        f"config|--config|{bomb}",
        f"config|--config|{dup}",
        f"train|--config|{dup}|--out|{tmp_path / 'out'}",
        "config|--set|train.seed=1099511627776",
        "config|--set|augment.rescale=.inf",
        "config|--set|data.image_size=[8192,8192]",
    ]
    child = run_process(
        [sys.executable, "-c", _CHILD, *calls], "cnnclf refusing six bad configs", cwd=tmp_path
    )
    *codes, loaded = child.stdout.splitlines()
    errors = child.stderr.splitlines()
    assert loaded == "False False", "a config error imported TensorFlow"
    assert codes == ["2"] * len(calls), child.stderr
    assert len(errors) == len(calls) and all(line.startswith("error: ") for line in errors)
    assert [line.split(":")[1].strip() for line in errors[3:]] == [
        "train.seed",
        "augment.rescale",
        "model.dense_units",
    ]
    assert str(dup) in errors[1] and "duplicate key train.epochs" in errors[2]


def test_relative_paths_in_a_config_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    (tmp_path / "project" / "data" / "train").mkdir(parents=True)
    (tmp_path / "project" / "configs").mkdir()
    config = tmp_path / "project" / "configs" / "c.yaml"
    config.write_text("data:\n  train_dir: ../data/train\n  test_dir: null\n")
    monkeypatch.chdir(tmp_path)  # anywhere but the config's folder
    loaded = load_config(config)
    assert Path(loaded.data.train_dir).resolve() == (tmp_path / "project" / "data" / "train")
    # --set values stay relative to the working directory, like any command-line path.
    overridden = load_config(config, ["data.train_dir=elsewhere"])
    assert overridden.data.train_dir == "elsewhere"


def test_an_old_style_path_relative_to_the_working_directory_still_works(tmp_path, monkeypatch):
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "c.yaml"
    config.write_text("data:\n  train_dir: data/train\n")
    monkeypatch.chdir(tmp_path)
    records = []
    handler = logging.Handler()
    handler.emit = records.append  # the CLI turns propagation off: listen on cnnclf's logger
    logging.getLogger("cnnclf").addHandler(handler)
    try:
        loaded = load_config(config)
    finally:
        logging.getLogger("cnnclf").removeHandler(handler)
    assert loaded.data.train_dir == "data/train"
    assert ["write ../data/train" in r.getMessage() for r in records] == [True]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_config_that_is_no_regular_file_is_refused_at_once(tmp_path, kind):
    """A FIFO blocked `open()` until a writer came, forever in practice; the bound here only
    keeps a regression from hanging the suite (the child is killed at the timeout)."""
    import os

    path = tmp_path / "config.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    child = run_process(
        [sys.executable, "-m", "cnnclf.cli", "config", "--config", str(path)],
        f"cnnclf config --config {kind}",
        timeout=30,
    )
    what = "a FIFO" if kind == "fifo" else "a device"
    assert child.returncode == 2, child.stderr
    assert child.stderr.splitlines() == [
        f"error: config file {path}: not a regular file ({what}); give a regular file"
    ]
