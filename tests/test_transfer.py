"""Pretrained backbones, init_from and fine-tuning, through the CLI, with weights the tests make.

Nothing here downloads: conftest sets CNNCLF_OFFLINE=1, and every weights file is built by the
test from `keras.applications` with weights=None.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    WAIT_S,
    communicate,
    make_tree,
    read_json,
    run_cli,
    run_process,
    start_workers,
    train_command,
    write_config,
)

from cnnclf.config import load_config
from cnnclf.errors import ConfigError
from cnnclf.model.backbones import BACKBONES

SMALL = [32, 32]


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("tiny"), n_classes=3, n_train=4, n_test=2)


def backbone_config(path: Path, tree: Path, backbone, **sections) -> Path:
    """A config for `tree` with a backbone: no conv_blocks or rescale (refused with one)."""
    import yaml

    config = {
        "data": {
            "train_dir": str(tree / "training_set"),
            "test_dir": str(tree / "test_set"),
            "image_size": SMALL,
            "batch_size": 16,
        },
        "augment": {"horizontal_flip": True},
        "model": {"backbone": backbone, "dense_units": [8]},
        "train": {"epochs": 1, "seed": 7},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def keras_model(bundle: Path):
    from cnnclf.bundle import load_bundle

    return load_bundle(bundle).model


def backbone_of(bundle: Path):
    import keras

    nested = [layer for layer in keras_model(bundle).layers if isinstance(layer, keras.Model)]
    assert len(nested) == 1
    return nested[0]


@pytest.fixture(scope="module")
def scratch_bundle(tmp_path_factory, tiny_tree):
    """mobilenet_v3_small with weights: none, trained one step: shared by several tests."""
    work = tmp_path_factory.mktemp("scratch")
    config = backbone_config(
        work / "c.yaml", tiny_tree, {"name": "mobilenet_v3_small", "weights": "none"}
    )
    result = run_cli("train", "--config", config, "--out", work / "bundle")
    assert result.exit_code == 0, result.output
    return work / "bundle"


@pytest.mark.slow
def test_a_backbone_bundle_records_its_start_and_predicts(scratch_bundle, tiny_tree):
    manifest = read_json(scratch_bundle / "bundle.json")
    assert manifest["start"]["backbone"] == {
        "name": "mobilenet_v3_small",
        "trainable": False,
        "weights": {"kind": "none", "file": None, "sha256": None},
    }
    assert manifest["phases"] == [
        {"name": "train", "epochs": [1, 1], "learning_rate": 0.001, "trains": "the head"}
    ]
    # The dumped config loads again (no conv_blocks beside the backbone).
    config = load_config(scratch_bundle / "config.yaml")
    assert config.model.backbone["name"] == "mobilenet_v3_small"
    predicted = run_cli(
        "predict", "--model", scratch_bundle, "--format", "json", tiny_tree / "test_set" / "checker"
    )
    assert predicted.exit_code == 0, predicted.output
    rows = json.loads(predicted.stdout)
    assert len(rows) == 2 and all(np.isfinite(r["probability"]) for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(BACKBONES) - {"mobilenet_v3_small"}))
def test_each_other_backbone_builds_and_trains_one_step(tmp_path, tiny_tree, name):
    config = backbone_config(tmp_path / "c.yaml", tiny_tree, {"name": name, "weights": "none"})
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert read_json(tmp_path / "b" / "bundle.json")["start"]["backbone"]["name"] == name
    assert backbone_of(tmp_path / "b").count_params() == BACKBONES[name].params
    from cnnclf.model.backbones import NO_ONNX

    if name in NO_ONNX:  # refused in one line before converting, not a tf2onnx traceback
        result = run_cli(
            "export", "--model", tmp_path / "b", "--format", "onnx", "--out", tmp_path / "m.onnx"
        )
        assert result.exit_code != 0
        assert result.stderr.strip() == (
            f"error: --format onnx: not available for a {name} "
            f"backbone ({NO_ONNX[name]}); export --format "
            "tflite or savedmodel instead"
        )


def _saved_backbone(path: Path, seed: int):
    """A mobilenet_v3_small without its top, made here, saved as `path`; returns its weights."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(*SMALL, 3)
    )
    # Moving statistics away from their initial 0/1 too, so a load shows in every variable.
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(variable.numpy() + rng.normal(0, 0.01, variable.shape).astype("float32"))
    if path.name.endswith(".weights.h5"):
        model.save_weights(path)
    else:  # the legacy HDF5 layout of Keras' own ImageNet files
        import h5py
        from keras.src.legacy.saving import legacy_h5_format

        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return [w.numpy() for w in model.weights]


@pytest.mark.slow
@pytest.mark.parametrize("file_name", ["mine.weights.h5", "legacy.h5"])
def test_a_weights_file_loads_through_the_config_and_changes_predictions(
    tmp_path, tiny_tree, scratch_bundle, file_name
):
    expected = _saved_backbone(tmp_path / file_name, seed=3)
    # A relative path: resolved from the config file's folder.
    loaded = backbone_config(
        tmp_path / "c.yaml", tiny_tree, {"name": "mobilenet_v3_small", "weights": file_name}
    )
    result = run_cli("train", "--config", loaded, "--out", tmp_path / "loaded")
    assert result.exit_code == 0, result.output
    weights = read_json(tmp_path / "loaded" / "bundle.json")["start"]["backbone"]["weights"]
    assert weights["kind"] == "file" and weights["file"] == file_name
    assert len(weights["sha256"]) == 64
    # Frozen (BatchNormalization too): the bundle's backbone is exactly the file.
    backbone = backbone_of(tmp_path / "loaded")
    got = [w.numpy() for w in backbone.weights]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    other = backbone_of(scratch_bundle)  # the same config with weights: none
    assert not all(np.allclose(a.numpy(), b) for a, b in zip(other.weights, expected))
    x = np.random.default_rng(0).uniform(0, 255, (4, *SMALL, 3)).astype("float32")
    a = keras_model(tmp_path / "loaded").predict_on_batch(x)
    b = keras_model(scratch_bundle).predict_on_batch(x)
    assert not np.allclose(a, b, atol=1e-4)


@pytest.mark.slow
def test_a_weights_file_of_another_model_is_one_config_error(tmp_path, tiny_tree):
    import keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.save_weights(tmp_path / "other.weights.h5")
    config = backbone_config(
        tmp_path / "c.yaml",
        tiny_tree,
        {"name": "mobilenet_v3_small", "weights": str(tmp_path / "other.weights.h5")},
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: model.backbone.weights: ")
    assert "does not fit mobilenet_v3_small" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_offline_imagenet_is_one_line_before_tensorflow(tmp_path, tiny_tree):
    config = backbone_config(
        tmp_path / "c.yaml", tiny_tree, {"name": "mobilenet_v3_small", "weights": "imagenet"}
    )
    env = dict(os.environ, CNNCLF_OFFLINE="1", KERAS_HOME=str(tmp_path / "keras"))
    # -X importtime lists every module imported: TensorFlow must not be among them.
    result = run_process(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "cnnclf.cli",
            "train",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "b"),
        ],
        "cnnclf train with imagenet weights offline",
        env=env,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert len(errors) == 1, errors
    line = errors[0]
    wanted = BACKBONES["mobilenet_v3_small"].imagenet_file
    assert line.startswith("error: model.backbone.weights: imagenet needs " + wanted)
    assert str(tmp_path / "keras" / "models" / wanted) in line
    assert "weights file" in line and "none" in line
    assert " tensorflow\n" not in result.stderr and "| tensorflow" not in result.stderr
    assert "Epoch" not in result.stdout and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_imagenet_weights_in_keras_cache_are_hash_checked_then_used(
    tmp_path, tiny_tree, monkeypatch
):
    """What `imagenet` loads is the cached file of Keras' name, checked against Keras' own
    hash (the file is made here, and the hash Keras knows is set to its hash: no download)."""
    import keras.src.applications.mobilenet_v3 as keras_module

    from cnnclf.model.backbones import sha256_of

    spec = BACKBONES["mobilenet_v3_small"]
    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True)
    expected = _saved_backbone(cache / spec.imagenet_file, seed=4)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    config = backbone_config(
        tmp_path / "c.yaml", tiny_tree, {"name": "mobilenet_v3_small", "weights": "imagenet"}
    )
    refused = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert refused.exit_code == 2, refused.output
    assert "is not Keras' ImageNet file for mobilenet_v3_small" in refused.stderr
    assert refused.stderr.count("error:") == 1 and not (tmp_path / "b").exists()

    digest = sha256_of(cache / spec.imagenet_file)
    hashes = dict(keras_module.WEIGHTS_HASHES)
    hashes[spec.hash_key] = (hashes[spec.hash_key][0], digest)
    monkeypatch.setattr(keras_module, "WEIGHTS_HASHES", hashes)
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    weights = read_json(tmp_path / "b" / "bundle.json")["start"]["backbone"]["weights"]
    assert weights == {"kind": "imagenet", "file": spec.imagenet_file, "sha256": digest}
    got = backbone_of(tmp_path / "b").weights
    np.testing.assert_allclose(got[0].numpy(), expected[0], atol=1e-6)


@pytest.mark.slow
def test_grayscale_feeds_an_rgb_backbone_and_grad_cam_works(tmp_path, tiny_tree):
    config = backbone_config(
        tmp_path / "c.yaml",
        tiny_tree,
        {"name": "mobilenet_v3_small", "weights": "none"},
        data={"color_mode": "grayscale"},
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert keras_model(tmp_path / "b").input_shape == (None, *SMALL, 1)
    image = next((tiny_tree / "test_set" / "hstripes").iterdir())
    explained = run_cli("explain", "--model", tmp_path / "b", "--out", tmp_path / "cam", image)
    assert explained.exit_code == 0, explained.output
    assert list((tmp_path / "cam").glob("*.png"))


@pytest.fixture(scope="module")
def source_bundle(tmp_path_factory, tiny_tree):
    """A from-scratch bundle on three classes: what init_from starts from."""
    work = tmp_path_factory.mktemp("source")
    config = write_config(work / "c.yaml", tiny_tree, train={"epochs": 2, "seed": 3})
    result = run_cli("train", "--config", config, "--out", work / "bundle")
    assert result.exit_code == 0, result.output
    return work / "bundle"


@pytest.mark.slow
def test_init_from_copies_frozen_features_and_fine_tune_moves_them(
    tmp_path, source_bundle, binary_tree
):
    source = keras_model(source_bundle).get_layer("conv1").get_weights()
    frozen = write_config(tmp_path / "f.yaml", binary_tree, model={"init_from": str(source_bundle)})
    result = run_cli("train", "--config", frozen, "--out", tmp_path / "frozen")
    assert result.exit_code == 0, result.output
    model = keras_model(tmp_path / "frozen")
    assert model.output_shape == (None, 1)  # a new head: 2 classes, not the source's 3
    for a, b in zip(model.get_layer("conv1").get_weights(), source):
        np.testing.assert_array_equal(a, b)
    manifest = read_json(tmp_path / "frozen" / "bundle.json")
    assert manifest["start"]["init_from"]["bundle"] == str(source_bundle)
    # Saved absolute: the bundle's own config trains again from anywhere.
    saved = load_config(tmp_path / "frozen" / "config.yaml")
    assert saved.model.init_from == str(source_bundle.resolve())
    assert (
        manifest["start"]["init_from"]["run_id"]
        == read_json(source_bundle / "bundle.json")["run_id"]
    )

    # Augmented in the training step: `fit` then trains a wrapper around the bundle's model.
    tuned = write_config(
        tmp_path / "t.yaml",
        binary_tree,
        model={"init_from": str(source_bundle)},
        augment={
            "rescale": "1/255",
            "shear_range": 0.2,
            "zoom_range": 0.2,
            "horizontal_flip": True,
            "where": "step",
        },
        train={
            "epochs": 1,
            "seed": 7,
            "fine_tune": {"epochs": 2, "learning_rate": 0.01, "unfreeze": 4},
        },
    )
    result = run_cli("train", "--config", tuned, "--out", tmp_path / "tuned")
    assert result.exit_code == 0, result.output
    # More layers asked for than there are: what is said and recorded is what trained.
    assert "fine-tuning: the top 1 of 1 feature layers with weights unfrozen" in result.stderr
    history = read_json(tmp_path / "tuned" / "history.json")
    assert history["epoch"] == [1, 2, 3]
    assert history["learning_rate"] == pytest.approx([0.001, 0.01, 0.01])
    phases = read_json(tmp_path / "tuned" / "bundle.json")["phases"]
    assert [(p["name"], p["epochs"]) for p in phases] == [("train", [1, 1]), ("fine_tune", [2, 3])]
    assert phases[1]["trains"] == "head and the top 1 feature layers"
    moved = keras_model(tmp_path / "tuned").get_layer("conv1").get_weights()[0]
    assert not np.allclose(moved, source[0])


@pytest.mark.slow
def test_init_from_with_other_features_is_a_config_error(tmp_path, source_bundle, binary_tree):
    config = write_config(
        tmp_path / "c.yaml",
        binary_tree,
        model={"init_from": str(source_bundle), "conv_blocks": [{"filters": 8}]},
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: model.init_from: model.conv_blocks is ")
    assert "set model.conv_blocks to" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    not_a_bundle = write_config(
        tmp_path / "n.yaml", binary_tree, model={"init_from": str(tmp_path)}
    )
    result = run_cli("train", "--config", not_a_bundle, "--out", tmp_path / "b")
    assert result.exit_code == 2 and "is not a cnnclf bundle" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [2, 3])
def test_resume_across_the_phase_boundary_ends_with_the_same_epochs(
    tmp_path, source_bundle, binary_tree, kill_at
):
    config = write_config(
        tmp_path / "c.yaml",
        binary_tree,
        model={"init_from": str(source_bundle)},
        train={
            "epochs": 2,
            "seed": 7,
            "keep_best": "val_loss",
            "fine_tune": {"epochs": 2, "learning_rate": 0.01},
        },
    )
    out = tmp_path / "b"
    env = dict(os.environ, CNNCLF_FAULT=f"checkpoint.committed@{kill_at}=kill")
    killed = run_process(
        [sys.executable, "-m", "cnnclf.cli", "train", "--config", str(config), "--out", str(out)],
        f"a run killed at checkpoint {kill_at}",
        env=env,
    )
    assert killed.returncode == -9, killed.stderr
    result = run_cli("train", "--config", config, "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert f"resuming after epoch {kill_at} of 4" in result.stderr
    history = read_json(out / "history.json")
    assert history["epoch"] == [1, 2, 3, 4]
    assert history["learning_rate"] == pytest.approx([0.001, 0.001, 0.01, 0.01])
    phases = read_json(out / "bundle.json")["phases"]
    assert [p["epochs"] for p in phases] == [[1, 2], [3, 4]]


@pytest.mark.slow
def test_export_parity_for_a_backbone_bundle(tmp_path, tiny_tree, scratch_bundle):
    for fmt, name in (("tflite", "m.tflite"), ("onnx", "m.onnx")):
        result = run_cli(
            "export",
            "--model",
            scratch_bundle,
            "--format",
            fmt,
            "--out",
            tmp_path / name,
            "--data",
            tiny_tree / "test_set",
        )
        assert result.exit_code == 0, result.output
        parity = json.loads((tmp_path / f"{name}.cnnclf.json").read_text())["parity"]
        assert parity["max_abs_diff"] <= 1e-4
        predicted = run_cli(
            "predict",
            "--model",
            tmp_path / name,
            "--format",
            "json",
            tiny_tree / "test_set" / "checker",
        )
        assert predicted.exit_code == 0, predicted.output


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"model": {"backbone": "mobilenet_v3_small", "conv_blocks": [32]}},
            "model.conv_blocks: does not apply with model.backbone",
        ),
        (
            {"model": {"backbone": "mobilenet_v3_small"}, "augment": {"rescale": "1/255"}},
            "augment.rescale: does not apply with model.backbone",
        ),
        (
            {"model": {"backbone": "resnet50_v2"}, "data": {"image_size": [24, 24]}},
            "data.image_size: [24, 24] is too small for resnet50_v2; each side must be at least 32",
        ),
        (
            {"model": {"backbone": "mobilenet_v3_smal"}},
            "model.backbone.name: unknown backbone 'mobilenet_v3_smal'; did you mean "
            "'mobilenet_v3_small'?",
        ),
        (
            {"model": {"backbone": {"name": "convnext_tiny", "weights": "missing.h5"}}},
            "model.backbone.weights: ",
        ),
        ({"train": {"fine_tune": {"epochs": 3}}}, "train.fine_tune: there is nothing pretrained"),
        (
            {
                "model": {"backbone": "mobilenet_v3_small"},
                "train": {"fine_tune": {"epochs": 3, "unfreeze": "some"}},
            },
            "train.fine_tune.unfreeze: ",
        ),
    ],
)
def test_transfer_config_errors_name_the_key(tmp_path, raw, message):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(message), str(caught.value)


def test_backbone_defaults_follow_the_backbone(tmp_path):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"backbone": "efficientnet_v2_b0"}}))
    config = load_config(path)
    assert config.data.image_size == [224, 224]
    assert config.model.pooling == "global_average"
    assert config.model.backbone == {
        "name": "efficientnet_v2_b0",
        "weights": "imagenet",
        "trainable": False,
    }


@pytest.mark.slow
def test_a_small_from_scratch_run_suggests_a_backbone(tmp_path, binary_tree):
    # 32x32 colour: the smallest images a backbone takes (smaller ones are advised init_from).
    config = write_config(tmp_path / "c.yaml", binary_tree, data={"image_size": SMALL})
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "hint: 12 training images in the smallest class" in result.stderr
    assert "configs/transfer.yaml" in result.stderr


def test_check_data_suggests_a_backbone_unless_the_config_has_one(tmp_path, binary_tree):
    result = run_cli("check-data", binary_tree)
    assert "suggestion: training_set: 12 images in the smallest class is few" in result.stdout
    config = backbone_config(
        tmp_path / "c.yaml", binary_tree, {"name": "mobilenet_v3_small", "weights": "none"}
    )
    result = run_cli("check-data", "--config", config)
    assert result.exit_code == 0, result.output
    assert "pretrained backbone" not in result.stdout


def test_check_data_advises_init_from_for_images_too_small_for_a_backbone(tmp_path, binary_tree):
    tiny = write_config(
        tmp_path / "tiny.yaml",
        binary_tree,
        data={"image_size": [28, 28], "color_mode": "grayscale"},
    )
    result = run_cli("check-data", "--config", tiny)
    assert result.exit_code == 0, result.output
    assert "28x28 images are too small for a pretrained ImageNet backbone" in result.stdout
    assert "model.init_from" in result.stdout and "transfer.yaml" not in result.stdout
    colour = write_config(tmp_path / "colour.yaml", binary_tree, data={"image_size": [64, 64]})
    result = run_cli("check-data", "--config", colour)
    assert "a pretrained backbone usually does much better" in result.stdout


@pytest.mark.slow
def test_early_stopping_in_phase_one_moves_on_to_fine_tuning(tmp_path, source_bundle, binary_tree):
    # min_delta 10: no epoch can improve enough, so each phase stops after patience + 1 epochs.
    config = write_config(
        tmp_path / "c.yaml",
        binary_tree,
        model={"init_from": str(source_bundle)},
        train={
            "epochs": 5,
            "seed": 7,
            "early_stopping": {"patience": 1, "min_delta": 10},
            "fine_tune": {"epochs": 4, "learning_rate": 0.01},
        },
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "fine-tuning next" in result.stderr
    assert read_json(tmp_path / "b" / "history.json")["epoch"] == [1, 2, 3, 4]
    manifest = read_json(tmp_path / "b" / "bundle.json")
    assert [p["epochs"] for p in manifest["phases"]] == [[1, 2], [3, 4]]
    assert manifest["stopped_early"] is True


@pytest.mark.slow
def test_serve_predicts_explains_and_describes_a_backbone_bundle(scratch_bundle, tiny_tree):
    from fastapi.testclient import TestClient

    from cnnclf.bundle import load_bundle
    from cnnclf.serve.app import ServeSettings, create_app

    image = next((tiny_tree / "test_set" / "checker").iterdir())
    app = create_app(load_bundle(scratch_bundle), ServeSettings(name="bb"))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:  # a Host serve answers
        card = client.get("/v1/models/bb/metadata").json()["metadata"]
        assert card["architecture"] == "mobilenet_v3_small (none)"
        with image.open("rb") as f:
            rows = client.post("/predict", files={"file": (image.name, f)}).json()
        assert rows[0]["label"] in ("checker", "hstripes", "vstripes")
        with image.open("rb") as f:
            explained = client.post("/explain", files={"file": (image.name, f)})
        assert explained.status_code == 200
        assert explained.headers["content-type"] == "image/png"


@pytest.mark.slow
def test_both_phases_run_mirrored_in_bfloat16_with_a_backbone(tmp_path, tiny_tree):
    config = backbone_config(
        tmp_path / "c.yaml",
        tiny_tree,
        {"name": "mobilenet_v3_small", "weights": "none"},
        train={
            "epochs": 1,
            "seed": 7,
            "mixed_precision": "bfloat16",
            "distribute": "mirrored",
            "fine_tune": {"epochs": 1, "unfreeze": 3},
        },
    )
    result = run_process(
        train_command(config, tmp_path / "b"),
        "a mirrored bfloat16 run with a backbone",
        env={**os.environ, "CNNCLF_LOGICAL_CPUS": "2"},
    )
    assert result.returncode == 0, result.stderr
    assert "strategy: mirrored; replicas: 2; precision: mixed_bfloat16" in result.stderr
    assert "fine-tuning: the top 3 of 52 feature layers with weights unfrozen" in result.stderr
    manifest = read_json(tmp_path / "b" / "bundle.json")
    assert [p["epochs"] for p in manifest["phases"]] == [[1, 1], [2, 2]]
    model = keras_model(tmp_path / "b")
    assert model.get_layer("output").dtype_policy.name == "float32"
    assert backbone_of(tmp_path / "b").layers[-1].dtype_policy.name == "mixed_bfloat16"


@pytest.mark.slow
def test_both_phases_run_on_a_multi_worker_cluster(tmp_path, source_bundle, binary_tree):
    config = write_config(
        tmp_path / "c.yaml",
        binary_tree,
        model={"init_from": str(source_bundle)},
        train={"epochs": 1, "seed": 3, "fine_tune": {"epochs": 1, "learning_rate": 0.01}},
    )
    workers = start_workers(config, tmp_path / "bundle")
    errors = [communicate(w, "a multi-worker training run", 2 * WAIT_S)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    assert "fine-tuning: all of 1 feature layers" in errors[0]
    history = read_json(tmp_path / "bundle" / "history.json")
    assert history["epoch"] == [1, 2]
    assert history["learning_rate"] == pytest.approx([0.001, 0.01])


@pytest.mark.slow
def test_init_from_a_backbone_bundle_needs_no_imagenet_file(tmp_path, scratch_bundle, tiny_tree):
    """The bundle's features replace the backbone's weights: offline, imagenet is not needed."""
    config = backbone_config(
        tmp_path / "c.yaml",
        tiny_tree,
        {"name": "mobilenet_v3_small", "weights": "imagenet"},
        model={
            "backbone": {"name": "mobilenet_v3_small"},
            "dense_units": [4],
            "init_from": str(scratch_bundle),
        },
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    start = read_json(tmp_path / "b" / "bundle.json")["start"]
    assert start["backbone"]["weights"]["kind"] == "init_from"
    assert start["init_from"]["bundle"] == str(scratch_bundle)
    for a, b in zip(backbone_of(tmp_path / "b").weights, backbone_of(scratch_bundle).weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
