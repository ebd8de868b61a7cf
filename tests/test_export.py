"""Export round trips with parity figures, predict from exports, Grad-CAM, preview, TensorBoard."""

import json
import warnings

import numpy as np
import pytest
from helpers import read_json, run_cli, write_config
from PIL import Image

from cnnclf.bundle import load_bundle

# Every test here trains a model or uses a trained bundle.
pytestmark = pytest.mark.slow


def labels_of(model, folder):
    result = run_cli("predict", "--model", model, "--format", "json", folder)
    assert result.exit_code == 0, result.output
    return [r["label"] for r in json.loads(result.stdout)], json.loads(result.stdout)


@pytest.fixture(scope="module")
def confident_bundle(tmp_path_factory, binary_tree):
    """A fixture model trained until it separates the classes: quantization error (~1e-3)
    cannot flip a label whose probability is far from the threshold."""
    work = tmp_path_factory.mktemp("confident")
    config = write_config(
        work / "c.yaml", binary_tree, train={"epochs": 10, "seed": 7, "learning_rate": 0.01}
    )
    result = run_cli("train", "--config", config, "--out", work / "bundle")
    assert result.exit_code == 0, result.output
    return work / "bundle"


@pytest.mark.parametrize(
    "fmt, name, quantize, criterion",
    [
        ("savedmodel", "exported", "none", "max_abs_diff"),
        ("tflite", "model.tflite", "none", "max_abs_diff"),
        ("tflite", "model16.tflite", "float16", "label_agreement"),
        ("tflite", "model8.tflite", "int8", "label_agreement"),
        ("onnx", "model.onnx", "none", "max_abs_diff"),
    ],
)
def test_export_round_trip_with_parity(
    tmp_path, confident_bundle, binary_tree, fmt, name, quantize, criterion
):
    binary_bundle = confident_bundle
    out = tmp_path / name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_cli(
            "export",
            "--model",
            binary_bundle,
            "--format",
            fmt,
            "--quantize",
            quantize,
            "--out",
            out,
        )
    assert result.exit_code == 0, result.output
    if fmt == "onnx":  # Keras' tf2onnx shim warned about np.object to every user
        assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    assert "parity on" in result.stdout and "label agreement 100.0%" in result.stdout
    sidecar = (
        (out / "cnnclf.json") if fmt == "savedmodel" else out.with_name(out.name + ".cnnclf.json")
    )
    meta = json.loads(sidecar.read_text())
    parity = meta["parity"]
    assert parity["images"] > 0 and parity["criterion"].startswith(criterion)
    if quantize == "none":
        assert parity["max_abs_diff"] <= 1e-4
    else:
        assert parity["label_agreement"] >= 0.99
    assert meta["class_indices"] == {"hstripes": 0, "vstripes": 1}
    assert meta["preprocessing"]["image_size"] == [16, 16]
    labels_file = (
        (out / "labels.txt") if fmt == "savedmodel" else out.with_name(out.name + ".labels.txt")
    )
    assert labels_file.read_text().split() == ["hstripes", "vstripes"]
    exported, rows = labels_of(out, binary_tree / "test_set")
    keras_labels, keras_rows = labels_of(binary_bundle, binary_tree / "test_set")
    assert exported == keras_labels
    if quantize == "none":
        assert (
            max(abs(a["probability"] - b["probability"]) for a, b in zip(rows, keras_rows)) <= 1e-4
        )


def test_an_export_failing_parity_writes_nothing(tmp_path, binary_bundle):
    # One epoch leaves every probability near 0.5, where int8 rounding flips labels.
    out = tmp_path / "m8.tflite"
    result = run_cli(
        "export", "--model", binary_bundle, "--format", "tflite", "--quantize", "int8", "--out", out
    )
    assert result.exit_code == 1
    assert (
        "export failed its parity check" in result.stderr and "nothing was written" in result.stderr
    )
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_to_overwrite_and_bad_combinations(tmp_path, binary_bundle):
    out = tmp_path / "m.tflite"
    assert (
        run_cli("export", "--model", binary_bundle, "--format", "tflite", "--out", out).exit_code
        == 0
    )
    again = run_cli("export", "--model", binary_bundle, "--format", "tflite", "--out", out)
    assert again.exit_code == 2 and "already exists" in again.stderr
    onnx_q = run_cli(
        "export",
        "--model",
        binary_bundle,
        "--format",
        "onnx",
        "--quantize",
        "int8",
        "--out",
        tmp_path / "m.onnx",
    )
    assert onnx_q.exit_code == 2 and "only tflite exports can be quantized" in onnx_q.stderr
    wrong = run_cli(
        "export", "--model", binary_bundle, "--format", "onnx", "--out", tmp_path / "m.tflite2"
    )
    assert wrong.exit_code == 2 and "must end in .onnx" in wrong.stderr


@pytest.mark.parametrize("fmt, name", [("tflite", "m.tflite"), ("savedmodel", "sm")])
def test_overwrite_replaces_an_existing_export(tmp_path, binary_bundle, binary_tree, fmt, name):
    out = tmp_path / name
    if fmt == "savedmodel":
        (out / "variables").mkdir(parents=True)
        (out / "stale.txt").write_text("from an older export")
    else:
        for path in (out, out.with_name(out.name + ".cnnclf.json")):
            path.write_text("from an older export")
    refused = run_cli("export", "--model", binary_bundle, "--format", fmt, "--out", out)
    assert refused.exit_code == 2 and "pass --overwrite to replace it" in refused.stderr
    result = run_cli(
        "export", "--model", binary_bundle, "--format", fmt, "--out", out, "--overwrite"
    )
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging
    assert not (out / "stale.txt").exists()
    image = sorted((binary_tree / "test_set" / "hstripes").iterdir())[0]
    assert run_cli("predict", "--model", out, image).exit_code == 0


def test_grad_cam_on_an_export_is_a_usage_error(tmp_path, binary_tree):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")  # refused before anything is loaded
    image = sorted((binary_tree / "test_set" / "hstripes").iterdir())[0]
    result = run_cli("explain", "--model", model, "--out", tmp_path / "cam", image)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: --model {model}: Grad-CAM needs a Keras bundle "
        "(the folder the export was made from), not an export"
    )


@pytest.mark.parametrize(
    "bundle_name, tree_name", [("binary_bundle", "binary_tree"), ("multi_bundle", "multi_tree")]
)
def test_grad_cam_heatmaps(request, tmp_path, bundle_name, tree_name):
    from cnnclf.inference.explain import grad_cam

    bundle_dir, tree = request.getfixturevalue(bundle_name), request.getfixturevalue(tree_name)
    images = (
        sorted((tree / "test_set").rglob("*.png"))[:2]
        + sorted((tree / "test_set").rglob("*.jpg"))[:1]
    )
    result = run_cli("explain", "--model", bundle_dir, "--out", tmp_path / "cam", *images)
    assert result.exit_code == 0, result.output
    for image in images:
        png = tmp_path / "cam" / f"{image.stem}_gradcam.png"
        with Image.open(png) as picture:
            assert picture.format == "PNG" and picture.width > picture.height
    bundle = load_bundle(bundle_dir)
    maps = [grad_cam(bundle, str(p))[0] for p in images[:2]]
    assert maps[0].shape == (16, 16) and maps[0].min() >= 0 and maps[0].max() <= 1
    assert not np.allclose(maps[0], maps[1])


def test_preview_grid_size(tmp_path, binary_tree):
    config = write_config(tmp_path / "c.yaml", binary_tree)
    result = run_cli(
        "preview-augment", "--config", config, "--n", "4", "--out", tmp_path / "grid.png"
    )
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (2 * 2 * 128, 2 * (128 + 16))  # 2x2 pairs of 128 px tiles


def test_tensorboard_logs_land_in_the_bundle(tmp_path, binary_tree):
    config = write_config(
        tmp_path / "c.yaml", binary_tree, train={"epochs": 1, "tensorboard": True}
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    events = list((tmp_path / "b" / "logs").rglob("events.out.tfevents.*"))
    assert events and read_json(tmp_path / "b" / "bundle.json")["epochs"] == 1
