"""Training end to end through the CLI: bundle contents, run folders, atomic publication."""

from pathlib import Path

import pytest
import yaml
from helpers import make_tree, read_json, run_cli, run_process, train_command, write_config

from cnnclf.bundle import load_bundle
from cnnclf.config import load_config
from cnnclf.errors import BundleError
from cnnclf.training.rundir import RunDir

BUNDLE_FILES = {
    "model.keras",
    "class_indices.json",
    "preprocessing.json",
    "config.yaml",
    "history.json",
    "bundle.json",
}


@pytest.mark.slow
def test_binary_bundle_describes_itself(binary_bundle, binary_tree):
    assert {p.name for p in binary_bundle.iterdir()} >= BUNDLE_FILES
    assert read_json(binary_bundle / "class_indices.json") == {"hstripes": 0, "vstripes": 1}
    pre = read_json(binary_bundle / "preprocessing.json")
    assert pre["image_size"] == [16, 16] and pre["color_mode"] == "rgb"
    assert pre["rescale"] == pytest.approx(1 / 255) and pre["rescale_in_model"] is True
    assert pre["class_mode"] == "binary" and pre["threshold"] == 0.5
    history = read_json(binary_bundle / "history.json")
    assert history["epoch"] == [1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
    manifest = read_json(binary_bundle / "bundle.json")
    assert manifest["train_images"] == {"hstripes": 12, "vstripes": 12}
    assert manifest["validation_images"] == {"hstripes": 4, "vstripes": 4}
    assert manifest["skipped_files"] == []
    saved = yaml.safe_load((binary_bundle / "config.yaml").read_text())
    assert Path(saved["data"]["train_dir"]).is_absolute()
    assert load_config(binary_bundle / "config.yaml").train.epochs == 1


@pytest.mark.slow
def test_binary_model_has_sigmoid_and_rescaling_inside(binary_bundle):
    bundle = load_bundle(binary_bundle)
    layers = bundle.model.layers
    assert type(layers[0]).__name__ == "Rescaling"
    assert bundle.model.output_shape == (None, 1)
    assert layers[-1].get_config()["activation"] == "sigmoid"
    assert not any(type(layer).__name__.startswith("Random") for layer in layers)


@pytest.mark.slow
def test_three_classes_get_softmax(multi_bundle):
    bundle = load_bundle(multi_bundle)
    assert bundle.model.output_shape == (None, 3)
    assert bundle.model.layers[-1].get_config()["activation"] == "softmax"
    assert bundle.class_names == ["checker", "hstripes", "vstripes"]
    pre = read_json(multi_bundle / "preprocessing.json")
    assert pre["class_mode"] == "categorical" and pre["threshold"] is None


@pytest.mark.slow
def test_validation_split_when_no_test_dir(tmp_path):
    tree = make_tree(tmp_path / "data", n_train=10, with_test=False)
    config = write_config(
        tmp_path / "c.yaml",
        tree,
        data={
            "train_dir": str(tree / "training_set"),
            "test_dir": None,
            "validation_split": 0.2,
            "image_size": [16, 16],
            "batch_size": 8,
            "color_mode": "grayscale",
        },
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    manifest = read_json(tmp_path / "b" / "bundle.json")
    assert manifest["validation_source"] == "validation_split"
    assert manifest["validation_images"] == {"hstripes": 2, "vstripes": 2}
    assert manifest["train_images"] == {"hstripes": 8, "vstripes": 8}
    assert read_json(tmp_path / "b" / "preprocessing.json")["color_mode"] == "grayscale"


@pytest.mark.slow
def test_runs_get_new_folders_named_after_the_config(tmp_path, binary_tree):
    config = write_config(tmp_path / "cats.yaml", binary_tree)
    first = run_cli("train", "--config", config, cwd=tmp_path)
    second = run_cli("train", "--config", config, cwd=tmp_path)
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(name.startswith("cats-") for name in runs)
    assert "bundle: runs/cats-" in second.stdout


@pytest.mark.slow
def test_out_refuses_to_replace_a_bundle_without_overwrite(tmp_path, binary_tree, binary_bundle):
    config = write_config(tmp_path / "c.yaml", binary_tree)
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    result = run_cli("train", "--config", config, "--out", out)
    assert result.exit_code == 1
    assert "folder exists and is not empty" in result.stderr and "--overwrite" in result.stderr
    assert (out / "keep.txt").read_text() == "earlier work"
    replaced = run_cli("train", "--config", config, "--out", out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert not (out / "keep.txt").exists() and (out / "model.keras").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_failed_write_leaves_nothing_behind(tmp_path):
    destination = tmp_path / "bundle"
    with pytest.raises(KeyboardInterrupt), RunDir(destination) as run:
        (run.staging / "model.keras").write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BundleError, match="not a complete cnnclf bundle"):
        load_bundle(tmp_path)


@pytest.mark.slow
def test_unreadable_training_file_is_skipped_and_recorded(tmp_path):
    tree = make_tree(tmp_path / "data")
    bad = tree / "training_set" / "hstripes" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    config = write_config(tmp_path / "c.yaml", tree)
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image" in result.stderr and "broken.jpg" in result.stderr
    manifest = read_json(tmp_path / "b" / "bundle.json")
    assert [entry["path"] for entry in manifest["skipped_files"]] == [str(bad)]


@pytest.mark.slow
def test_a_class_with_no_readable_image_stops_before_the_first_epoch(tmp_path):
    tree = make_tree(tmp_path / "data", n_train=6, n_test=3)
    for path in (tree / "training_set" / "vstripes").iterdir():
        # Truncated JPEGs: the header reads (listing keeps them), the pixels do not.
        path.with_suffix(".jpg").write_bytes(_truncated_jpeg(path))
        if path.suffix != ".jpg":
            path.unlink()
    config = write_config(tmp_path / "c.yaml", tree)
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 2, result.output
    assert (
        "data.train_dir: class vstripes has no readable image (6 file(s), all unreadable"
        in result.stderr
    )
    assert "Epoch 1" not in result.output and not (tmp_path / "b").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "data"]  # no litter


def _truncated_jpeg(path) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()[: len(buffer.getvalue()) // 3]


@pytest.mark.slow
def test_a_test_set_with_no_readable_image_stops_before_the_first_epoch(tmp_path):
    tree = make_tree(tmp_path / "data", n_train=6, n_test=3)
    for path in (tree / "test_set").rglob("*.*"):
        path.write_text("not an image")
    config = write_config(tmp_path / "c.yaml", tree)
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 2, result.output
    assert (
        "data.test_dir: no readable image to validate on (6 file(s), all unreadable)"
        in result.stderr
    )
    assert "Epoch 1" not in result.output


@pytest.mark.slow
def test_bundle_counts_the_images_actually_used(tmp_path):
    tree = make_tree(tmp_path / "data", n_train=6, n_test=3)
    for i in range(4):
        (tree / "training_set" / "hstripes" / f"empty_{i}.png").write_bytes(b"")
    config = write_config(tmp_path / "c.yaml", tree)
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    manifest = read_json(tmp_path / "b" / "bundle.json")
    assert manifest["train_images"] == {"hstripes": 6, "vstripes": 6}  # 10 files listed
    assert len(manifest["skipped_files"]) == 4
    assert "classes: hstripes (6 train, 3 val), vstripes (6 train, 3 val)" in result.stderr


@pytest.mark.slow
def test_keep_best_reports_the_kept_epoch(tmp_path, binary_tree):
    # val_accuracy saturates early on this easy data; a later epoch only ties, and a tie is
    # not an improvement, so the kept epoch is not the last one.
    config = write_config(
        tmp_path / "c.yaml",
        binary_tree,
        train={"epochs": 6, "seed": 11, "keep_best": "val_accuracy", "learning_rate": 0.01},
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    manifest = read_json(tmp_path / "b" / "bundle.json")
    history = read_json(tmp_path / "b" / "history.json")
    best = manifest["best_epoch"]
    assert best != 6, history  # else this test could not tell the epochs apart
    assert history["val_accuracy"][best - 1] == max(history["val_accuracy"])
    kept = {k: v[best - 1] for k, v in history.items() if k not in ("epoch", "epoch_seconds")}
    assert manifest["final_metrics"] == kept
    summary = next(line for line in result.stdout.splitlines() if line.startswith("bundle:"))
    assert f"val_loss {kept['val_loss']:.4f}" in summary
    metrics = read_json(tmp_path / "b" / "metrics.json")
    assert metrics["accuracy"] == pytest.approx(kept["val_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_training_on_its_own_test_set_is_warned_about(tmp_path, binary_tree):
    config = write_config(
        tmp_path / "c.yaml", binary_tree, data={"test_dir": str(binary_tree / "training_set")}
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "data.test_dir" in line]
    assert len(warnings) == 1 and "holds the training images themselves" in warnings[0]


@pytest.mark.slow
def test_the_cnnclf_command_leaves_no_temporary_files(tmp_path, binary_tree):
    # The command ends with os._exit (no interpreter teardown): TensorFlow's atexit clean-up
    # of autograph's generated modules must still run.
    import os

    config = write_config(tmp_path / "c.yaml", binary_tree)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = run_process(
        train_command(config, tmp_path / "b"),
        "cnnclf train",
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_steps_per_execution_is_one_on_cpu_and_more_on_an_accelerator():
    from cnnclf.training.distribute import steps_per_execution

    cpu, gpu = ["/job:localhost/replica:0/task:0/device:CPU:0"], ["/physical_device:GPU:0"]
    assert steps_per_execution("auto", cpu, 100) == 1
    assert steps_per_execution("auto", gpu, 100) == 32
    assert steps_per_execution("auto", gpu, 5) == 5  # never more than an epoch
    assert steps_per_execution(4, cpu, 100) == 4


@pytest.mark.slow
def test_jit_compile_true_trains_with_xla_on_cpu_and_is_recorded(tmp_path, binary_tree):
    recorded = []
    for setting in ("true", "auto"):
        config = write_config(tmp_path / f"{setting}.yaml", binary_tree)
        result = run_cli(
            "train",
            "--config",
            config,
            "--out",
            tmp_path / setting,
            "--set",
            f"train.jit_compile={setting}",
        )
        assert result.exit_code == 0, result.output
        assert f"jit_compile: {'true' if setting == 'true' else 'false'}" in result.stderr
        recorded.append(read_json(tmp_path / setting / "bundle.json")["placement"])
    assert [p["jit_compile"] for p in recorded] == [True, False]  # auto: no XLA on CPU
    assert recorded[0]["strategy"] == "default"


@pytest.mark.slow
def test_several_steps_per_execution_train_the_same_model(tmp_path, binary_tree):
    losses = []
    for steps in (1, 3):
        config = write_config(
            tmp_path / f"{steps}.yaml",
            binary_tree,
            train={"epochs": 2, "seed": 3, "deterministic": True, "steps_per_execution": steps},
        )
        result = run_cli("train", "--config", config, "--out", tmp_path / f"b{steps}")
        assert result.exit_code == 0, result.output
        losses.append(read_json(tmp_path / f"b{steps}" / "history.json")["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


@pytest.mark.slow
def test_a_small_validation_split_is_reported_first_counted_and_warned_about(tmp_path):
    import re

    data = make_tree(tmp_path / "scans", n_train=9, with_test=False)  # 20% held out: 2 a class
    config = write_config(tmp_path / "c.yaml", data, data={"test_dir": None})
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    # The validation figure first, each set with its image count.
    figure = r"\d\.\d{4}"
    assert re.fullmatch(
        rf"bundle: {re.escape(str(tmp_path / 'b'))}  \(val_accuracy {figure} on 4 images, "
        rf"val_loss {figure}; accuracy {figure} on 14 training images, loss {figure}; "
        r"[\d.]+ s\)",
        result.stdout.splitlines()[-1],  # after Keras' epoch lines
    ), result.stdout
    lines = result.stderr.splitlines()
    warning = (
        "warning: only 4 validation images (2 per class): its accuracy moves by ±25 points "
        "with one image; hold out more (data.validation_split) or add a test set "
        "(data.test_dir)"
    )
    # Outside a terminal, the steps after the last epoch say what they are doing.
    steps = [
        "validating 4 images for metrics.json",
        warning,
        "writing the bundle (model, sidecars, plots, manifest)",
    ]
    assert [line for line in lines if line in steps] == steps, result.stderr
    summary = run_cli("summary", "--model", tmp_path / "b")
    assert summary.exit_code == 0, summary.output
    assert "validation images: 4 from validation_split (2 hstripes, 2 vstripes)" in summary.stdout
    assert warning in summary.stdout.splitlines()
    assert re.search(r"weights of the last epoch: val_accuracy [\d.]+, val_loss", summary.stdout)
