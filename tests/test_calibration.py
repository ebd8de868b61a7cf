"""Calibration through the CLI: the temperature in the bundle, ECE/Brier before and after in
metrics.json and evaluate, train.calibrate false, a validation set too small, an older bundle,
threshold rules on calibrated probabilities, and export parity."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import WAIT_S, make_tree, read_json, run_cli, wait_for, write_config

# Every test here trains a model or uses a trained bundle.
pytestmark = pytest.mark.slow


def _train(work, tree, name, **train):
    config = write_config(
        work / f"{name}.yaml",
        tree,
        train={"epochs": 3, "seed": 7, "deterministic": True, "learning_rate": 0.01, **train},
    )
    result = run_cli("train", "--config", config, "--out", work / name)
    assert result.exit_code == 0, result.output
    return work / name, result


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Three classes, 12 test images each: 36 validation images, over the minimum of 30."""
    return make_tree(tmp_path_factory.mktemp("cal-tree"), n_classes=3, n_train=20, n_test=12)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tree):
    return _train(tmp_path_factory.mktemp("cal"), tree, "calibrated")[0]


@pytest.fixture(scope="module")
def uncalibrated_twin(tmp_path_factory, tree):
    return _train(tmp_path_factory.mktemp("uncal"), tree, "plain", calibrate=False)[0]


def _evaluate(bundle, data, *extra):
    result = run_cli("evaluate", "--model", bundle, "--format", "json", data, *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _predict(bundle, data, *extra):
    result = run_cli("predict", "--model", bundle, "--format", "json", data, *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_calibrated_bundle_reports_ece_and_brier_before_and_after(calibrated, tree, tmp_path):
    record = read_json(calibrated / "bundle.json")["calibration"]
    assert record["method"] == "temperature" and record["temperature"] > 0
    assert record["images"] == 36 and record["nll_after"] <= record["nll_before"]
    metrics = read_json(calibrated / "metrics.json")["calibration"]
    assert metrics["temperature"] == record["temperature"] and metrics["bins"] == 15
    assert {"ece", "brier", "ece_uncalibrated", "brier_uncalibrated"} <= set(metrics)
    report = _evaluate(calibrated, tree / "test_set", "--plots", tmp_path / "plots")
    cal = report["calibration"]
    assert cal["calibrated"] is True and cal["temperature"] == record["temperature"]
    # evaluate's data is the validation data here: the same figures as metrics.json.
    for key in ("ece", "brier", "ece_uncalibrated", "brier_uncalibrated"):
        assert cal[key] == pytest.approx(metrics[key], abs=1e-4)
    assert (tmp_path / "plots" / "reliability_diagram.png").is_file()
    assert str(tmp_path / "plots" / "reliability_diagram.png") in report["plots"]
    assert 0 < cal["ece_noise"] < cal["ece_noise_p95"] < 0.5  # 36 images: far from 0
    # The table a user reads shows the same figures, each on its own row.
    table = run_cli("evaluate", "--model", calibrated, tree / "test_set")
    assert table.exit_code == 0, table.output
    noise = f"{cal['ece_noise']:.4f} / {cal['ece_noise_p95']:.4f}"
    for label, value in (
        (r"ECE \(15 bins, top label\)", f"{cal['ece']:.4f}"),
        (r"ECE from sampling noise alone \(mean / 95%\)", noise),
        ("ECE before calibration", f"{cal['ece_uncalibrated']:.4f}"),
        ("Brier score", f"{cal['brier']:.4f}"),
        ("Brier before calibration", f"{cal['brier_uncalibrated']:.4f}"),
    ):
        assert re.search(rf"^{label} +{re.escape(value)}$", table.stdout, re.M), label


def test_calibrate_false_is_the_old_model_and_calibration_changes_no_label(
    calibrated, uncalibrated_twin, tree
):
    from cnnclf.bundle import load_bundle

    assert read_json(uncalibrated_twin / "bundle.json")["calibration"] is None
    assert "calibration" not in read_json(uncalibrated_twin / "metrics.json")
    # The same deterministic run: the calibrated model's output layer is the plain one / T.
    t = read_json(calibrated / "bundle.json")["calibration"]["temperature"]
    assert t != 1.0
    plain = load_bundle(uncalibrated_twin).model.layers[-1].get_weights()
    folded = load_bundle(calibrated).model.layers[-1].get_weights()
    for a, b in zip(plain, folded):
        np.testing.assert_allclose(a, b * t, rtol=1e-4, atol=1e-6)
    labels = [r["label"] for r in _predict(calibrated, tree / "test_set")]
    assert labels == [r["label"] for r in _predict(uncalibrated_twin, tree / "test_set")]
    report = _evaluate(uncalibrated_twin, tree / "test_set")
    assert report["calibration"]["calibrated"] is False
    assert "ece_uncalibrated" not in report["calibration"]


def test_a_validation_set_too_small_to_calibrate_warns_and_keeps_the_model(tmp_path, binary_tree):
    bundle, result = _train(tmp_path, binary_tree, "small")
    assert (
        "warning: train.calibrate: only 8 validation images; calibration needs at least 30"
        in result.stderr
    )
    assert result.stderr.count("warning: train.calibrate") == 1
    record = read_json(bundle / "bundle.json")["calibration"]
    assert record["temperature"] is None and "at least 30" in record["skipped"]
    assert "calibration" not in read_json(bundle / "metrics.json")


def test_an_older_bundle_without_calibration_predicts_unchanged(
    tmp_path, binary_bundle, binary_tree
):
    older = tmp_path / "older"
    shutil.copytree(binary_bundle, older)
    manifest = read_json(older / "bundle.json")
    manifest.pop("calibration", None)
    (older / "bundle.json").write_text(json.dumps(manifest))
    data = binary_tree / "test_set"
    assert _predict(older, data) == _predict(binary_bundle, data)
    report = _evaluate(older, data)
    assert report["calibration"]["calibrated"] is False
    assert report["accuracy"] == _evaluate(binary_bundle, data)["accuracy"]


def test_a_threshold_rule_runs_on_calibrated_probabilities(tmp_path):
    from cnnclf.inference.thresholds import choose_threshold

    tree = make_tree(tmp_path / "tree", n_classes=2, n_train=20, n_test=16)
    bundle, _ = _train(tmp_path, tree, "youden", threshold="youden", learning_rate=0.003)
    assert read_json(bundle / "bundle.json")["calibration"]["temperature"] != 1.0
    rows = _predict(bundle, tree / "test_set")  # test_dir is the validation data here
    positive = read_json(bundle / "class_indices.json")
    second = min(positive, key=lambda n: -positive[n])
    p1 = [r["probabilities"][second] for r in rows]
    y = [int(f"/{second}/" in r["path"]) for r in rows]
    threshold = read_json(bundle / "preprocessing.json")["threshold"]
    assert threshold == pytest.approx(choose_threshold(y, p1, "youden"), abs=1e-5)


@pytest.mark.parametrize("fmt, name", [("savedmodel", "exported"), ("onnx", "model.onnx")])
def test_an_export_of_a_calibrated_bundle_passes_parity(calibrated, tree, tmp_path, fmt, name):
    out = tmp_path / name
    result = run_cli("export", "--model", calibrated, "--format", fmt, "--out", out)
    assert result.exit_code == 0, result.output
    assert "parity on" in result.stdout
    exported = {r["path"]: r["probabilities"] for r in _predict(out, tree / "test_set")}
    for row in _predict(calibrated, tree / "test_set"):
        for name_, p in row["probabilities"].items():
            assert exported[row["path"]][name_] == pytest.approx(p, abs=1e-4)


def test_a_multi_label_bundle_gets_one_temperature_per_class(tmp_path):
    from multilabel_data import CLASSES, train_multi_label, write_label_file

    write_label_file(tmp_path, "train", 40, 0)
    write_label_file(tmp_path, "test", 32, 100)
    (tmp_path / "run").mkdir()
    bundle = train_multi_label(tmp_path, tmp_path / "run", epochs=3)
    record = read_json(bundle / "bundle.json")["calibration"]
    assert len(record["temperature"]) == len(CLASSES) and record["images"] == 32
    assert record["nll_after"] <= record["nll_before"]
    assert "ece_uncalibrated" in read_json(bundle / "metrics.json")["calibration"]
    report = _evaluate(bundle, tmp_path / "test.csv")
    assert report["calibration"]["temperature"] == record["temperature"]


def test_tta_averages_are_rescaled_by_their_own_temperature_on_every_path(calibrated, tree):
    """The fit is recorded, predict --tta and serve's ?tta=true apply it, evaluate --tta
    reports it, and a bundle without the record (trained before it) averages as it did."""
    from fastapi.testclient import TestClient

    from cnnclf.bundle import load_bundle
    from cnnclf.model.calibration import rescale
    from cnnclf.serve.app import ServeSettings, create_app

    record = read_json(calibrated / "bundle.json")["calibration"]
    assert record["tta_views"] == 4  # the original and the zoom, and their mirrors
    t = record["tta_temperature"]
    assert t > 0 and t != 1.0
    older = calibrated.parent / "older"
    shutil.copytree(calibrated, older)
    manifest = read_json(older / "bundle.json")
    del manifest["calibration"]["tta_temperature"], manifest["calibration"]["tta_views"]
    (older / "bundle.json").write_text(json.dumps(manifest))
    data = tree / "test_set"
    now = {r["path"]: r["probabilities"] for r in _predict(calibrated, data, "--tta")}
    before = {r["path"]: r["probabilities"] for r in _predict(older, data, "--tta")}
    names = list(next(iter(now.values())))
    for path, probs in before.items():
        expected = rescale(np.array([[probs[n] for n in names]]), t, "categorical")[0]
        np.testing.assert_allclose([now[path][n] for n in names], expected, atol=2e-4)
    assert _evaluate(calibrated, data, "--tta")["calibration"]["tta_temperature"] == t
    assert "tta_temperature" not in _evaluate(older, data, "--tta")["calibration"]
    path = sorted(now)[0]
    app = create_app(load_bundle(calibrated), ServeSettings(name="tta"))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, "/readyz", WAIT_S, 0.05)
        files = [("file", (Path(path).name, Path(path).read_bytes()))]
        served = client.post("/predict?tta=true", files=files)
    assert served.status_code == 200, served.text
    for name, p in served.json()[0]["probabilities"].items():
        assert p == pytest.approx(now[path][name], abs=1e-4)


def test_an_export_keeps_its_tta_temperature_and_views_when_its_source_is_gone(
    calibrated, tree, tmp_path
):
    from cnnclf.bundle.exported_models import sidecar_paths

    source = tmp_path / "bundle"
    shutil.copytree(calibrated, source)
    out = tmp_path / "model.onnx"
    result = run_cli("export", "--model", source, "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output
    sidecar = read_json(sidecar_paths(out)[1])
    assert sidecar["calibration"] == read_json(calibrated / "bundle.json")["calibration"]
    assert sidecar["tta_flips"] == [True, False]
    shutil.rmtree(source)  # moved, deleted or retrained: the export still knows its TTA
    exported = {r["path"]: r["probabilities"] for r in _predict(out, tree / "test_set", "--tta")}
    for row in _predict(calibrated, tree / "test_set", "--tta"):
        for name, p in row["probabilities"].items():
            assert exported[row["path"]][name] == pytest.approx(p, abs=1e-4)
