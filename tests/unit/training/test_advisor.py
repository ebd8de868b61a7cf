"""`cnnclf init`'s pure decisions: the flip check, the image size, and the written YAML."""

import subprocess
import sys

import numpy as np
import yaml

from cnnclf.training.advisor import (
    FLIP_LIMIT,
    Plan,
    Survey,
    choose,
    flip_asymmetry,
    image_side,
    render,
)


def _survey(**changes):
    values = dict(
        train_dir="/d/train",
        test_dir=None,
        counts={"a": 100, "b": 300},
        median_size=(40, 60),
        grayscale=False,
        asymmetry=0.1,
        weights="not in Keras' cache and CNNCLF_OFFLINE is set",
    )
    values.update(changes)
    return Survey(**values)


def test_mirror_symmetric_classes_score_low_and_oriented_ones_high():
    rng = np.random.default_rng(0)
    blob = np.zeros((32, 32))
    blob[8:24, 8:24] = 255  # centred: its own mirror image
    symmetric = blob + rng.normal(0, 5, (16, 32, 32))
    ramp = np.tile(np.linspace(0, 255, 32), (16, 32, 1))  # dark left, bright right: like text
    assert flip_asymmetry([symmetric]) < FLIP_LIMIT / 3
    assert flip_asymmetry([ramp]) > FLIP_LIMIT * 3
    assert flip_asymmetry([np.full((4, 32, 32), 7.0)]) == 0.0  # flat: no evidence either way


def test_image_side_rounds_to_eight_within_the_cpu_range():
    assert image_side(28, False) == 32
    assert image_side(5, False) == 16
    assert image_side(500, False) == 64
    assert image_side(500, True) == 224  # the backbone's own resolution


def test_offline_without_weights_picks_a_cnn_and_says_why(tmp_path):
    plan = choose(_survey(), tmp_path)
    values = {c.key: c for c in plan.choices}
    assert "model.backbone" not in values
    assert "CNNCLF_OFFLINE" in values["model.conv_blocks"].why


def test_cached_weights_and_few_colour_images_pick_the_backbone(tmp_path):
    plan = choose(_survey(weights="cache", median_size=(300, 400)), tmp_path)
    values = {c.key: c.value for c in plan.choices}
    assert values["model.backbone"]["name"] == "mobilenet_v3_small"
    assert values["data.image_size"] == [224, 224]
    assert "augment.rescale" not in values  # refused beside a backbone


def test_imbalance_and_no_test_set_choose_weights_threshold_and_split(tmp_path):
    values = {c.key: c.value for c in choose(_survey(), tmp_path).choices}
    assert values["train.class_weight"] == "balanced"  # 300 / 100 >= 1.5
    assert values["train.threshold"] == "youden"
    assert values["data.validation_split"] == 0.2
    assert values["augment.horizontal_flip"] is True
    oriented = {c.key: c.value for c in choose(_survey(asymmetry=0.9), tmp_path).choices}
    assert oriented["augment.horizontal_flip"] is False


def test_rendered_yaml_reads_back_with_every_value_and_a_comment_each():
    plan = Plan()
    plan.set("train.learning_rate", 1e-5, "why")
    plan.set("augment.rescale", "1/255", "why")
    plan.set("train.fine_tune", {"epochs": 2, "learning_rate": 1e-5}, "why")
    plan.set("data.test_dir", None, "why")
    text = render(plan, "data")
    assert yaml.safe_load(text) == {
        "train": {"learning_rate": 1e-5, "fine_tune": {"epochs": 2, "learning_rate": 1e-5}},
        "augment": {"rescale": "1/255"},
        "data": {"test_dir": None},
    }
    assert all("# why" in line for line in text.splitlines() if line.startswith("  "))


def test_the_advisor_imports_no_tensorflow():
    code = (
        "import sys, cnnclf.training.advisor, cnnclf.cli.init; print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
