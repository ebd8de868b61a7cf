"""Training controls: class weights, early stopping, best weights, schedules, determinism."""

import itertools

import numpy as np
import pytest
from helpers import make_tree, read_json, run_cli, write_config

from cnnclf.bundle import load_bundle

# Every test here trains a model or uses a trained bundle.
pytestmark = pytest.mark.slow


def train(tmp_path, tree, name="b", **train_overrides):
    config = write_config(
        tmp_path / f"{name}.yaml", tree, train={"epochs": 1, "seed": 11, **train_overrides}
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / name)
    assert result.exit_code == 0, result.output
    return tmp_path / name, result


def test_balanced_class_weights_follow_the_counts(tmp_path):
    tree = make_tree(tmp_path / "data", n_train=12)
    for extra in sorted((tree / "training_set" / "vstripes").iterdir())[:8]:
        extra.unlink()  # 12 hstripes against 4 vstripes
    bundle, result = train(tmp_path, tree, class_weight="balanced")
    assert read_json(bundle / "bundle.json")["class_weight"] == {"0": 16 / 24, "1": 16 / 8}
    assert "class weights: hstripes 0.667, vstripes 2" in result.stderr


def test_explicit_class_weight_must_name_classes(tmp_path, binary_tree):
    config = write_config(tmp_path / "c.yaml", binary_tree, train={"class_weight": {"zebra": 2.0}})
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 2
    assert "train.class_weight: zebra is not a class (classes: hstripes, vstripes)" in result.stderr


def test_early_stopping_stops_and_keeps_the_best_epoch(tmp_path, binary_tree):
    # min_delta 1e9 means no epoch ever counts as an improvement after the first.
    bundle, result = train(
        tmp_path, binary_tree, epochs=10, early_stopping={"patience": 2, "min_delta": 1e9}
    )
    manifest = read_json(bundle / "bundle.json")
    assert manifest["epochs"] == 3 and manifest["stopped_early"] is True
    assert manifest["best_epoch"] is not None
    assert "early stopping: val_loss did not improve for 2 epochs" in result.stderr


@pytest.mark.parametrize(
    "schedule, check",
    [
        (
            "cosine",
            lambda lrs: (
                lrs[0] == pytest.approx(1e-3)
                and lrs[-1] == pytest.approx(1e-6)
                and all(a > b for a, b in itertools.pairwise(lrs))
            ),
        ),
        ("none", lambda lrs: lrs == pytest.approx([1e-3] * 4)),
    ],
)
def test_learning_rate_schedules(tmp_path, binary_tree, schedule, check):
    bundle, _ = train(tmp_path, binary_tree, epochs=4, lr_schedule=schedule)
    assert check(read_json(bundle / "history.json")["learning_rate"])


def test_deterministic_runs_are_identical(tmp_path, binary_tree):
    first, _ = train(tmp_path, binary_tree, "one", deterministic=True)
    second, _ = train(tmp_path, binary_tree, "two", deterministic=True)
    weights = [load_bundle(b).model.get_weights() for b in (first, second)]
    assert all(np.array_equal(a, b) for a, b in zip(*weights))
    preds = [
        run_cli("predict", "--model", b, "--format", "json", binary_tree / "test_set").stdout
        for b in (first, second)
    ]
    assert preds[0] == preds[1]
    assert read_json(first / "history.json")["loss"] == read_json(second / "history.json")["loss"]


def test_reduce_on_plateau_follows_the_validation_loss(tmp_path, binary_tree):
    # A large rate makes val_loss bounce; replaying the rule over the recorded val_loss must
    # give exactly the recorded rates (the rate logged for an epoch is the one it used).
    bundle, _ = train(
        tmp_path,
        binary_tree,
        epochs=6,
        learning_rate=0.5,
        lr_schedule="reduce_on_plateau",
        lr_patience=1,
        lr_factor=0.5,
        min_learning_rate=0.0,
    )
    history = read_json(bundle / "history.json")
    rate, best, wait, expected = 0.5, None, 0, []
    for val_loss in history["val_loss"]:
        expected.append(rate)
        if best is None or val_loss < best:
            best, wait = val_loss, 0
        else:
            wait += 1
            if wait >= 1:
                rate, wait = rate * 0.5, 0
    assert history["learning_rate"] == pytest.approx(expected)
    assert min(history["learning_rate"]) < 0.5  # the schedule did act


def test_a_nan_loss_stops_the_run_at_the_end_of_its_epoch(tmp_path, binary_tree):
    # Class weights at the float32 limit make the weighted loss overflow: NaN in epoch 1.
    config = write_config(
        tmp_path / "c.yaml",
        binary_tree,
        train={"epochs": 3, "class_weight": {"hstripes": 3.0e38, "vstripes": 3.0e38}},
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 1
    assert "the loss became NaN in epoch 1; lower train.learning_rate" in result.stderr
    assert "Epoch 2/3" not in result.output
    # Nothing published, and no NaN epoch kept to resume from.
    assert not (tmp_path / "b").exists() and not (tmp_path / ".b.partial").exists()
