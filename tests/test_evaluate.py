"""`cnnclf evaluate` and the evaluation written into bundles at training time."""

import json
import shutil

import pytest
from helpers import make_tree, read_json, run_cli, write_config
from PIL import Image

# Every test here trains a model or uses a trained bundle.
pytestmark = pytest.mark.slow

REPORT_KEYS = {"accuracy", "per_class", "confusion_matrix", "roc_auc", "threshold", "n_images"}


def test_json_report_schema_and_plots(tmp_path, binary_bundle, binary_tree):
    result = run_cli(
        "evaluate",
        "--model",
        binary_bundle,
        "--format",
        "json",
        "--plots",
        tmp_path / "plots",
        binary_tree / "test_set",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= REPORT_KEYS
    assert report["n_images"] == 8
    assert report["images_per_class"] == {"hstripes": 4, "vstripes": 4}
    assert report["data_dir"] == str((binary_tree / "test_set").resolve())
    assert report["bundle"] == str(binary_bundle.resolve())
    assert set(report["per_class"]) == {"hstripes", "vstripes"}
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == 8
    assert report["threshold"] == 0.5 and 0 <= report["sensitivity"] <= 1
    for name in ("confusion_matrix.png", "roc_curve.png", "pr_curve.png"):
        with Image.open(tmp_path / "plots" / name) as image:
            image.verify()
            assert image.format == "PNG"


def test_multiclass_report_has_no_threshold(multi_bundle, multi_tree):
    result = run_cli(
        "evaluate", "--model", multi_bundle, "--format", "json", multi_tree / "test_set"
    )
    report = json.loads(result.stdout)
    assert "threshold" not in report and len(report["confusion_matrix"]["matrix"]) == 3


def test_defaults_to_the_bundles_validation_data_and_renders_markdown(binary_bundle, binary_tree):
    result = run_cli("evaluate", "--model", binary_bundle, "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert "# Evaluation report" in result.stdout
    assert f"{(binary_tree / 'test_set').resolve()} (data.test_dir)" in result.stdout
    assert "| class | precision | recall | f1 | support |" in result.stdout
    assert "| true \\ predicted | hstripes | vstripes |" in result.stdout


def test_class_mismatch_names_the_difference(tmp_path, binary_bundle):
    other = make_tree(tmp_path / "other", n_classes=3, n_train=2, with_test=False)
    result = run_cli("evaluate", "--model", binary_bundle, other / "training_set")
    assert result.exit_code == 2
    assert (
        "classes differ from the model's class_indices (not in the model: checker)" in result.stderr
    )


def test_training_writes_metrics_curves_and_a_tuned_threshold(tmp_path, binary_tree):
    config = write_config(
        tmp_path / "c.yaml",
        binary_tree,
        train={"epochs": 2, "seed": 3, "threshold": "recall>=0.95"},
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "b"
    metrics = read_json(bundle / "metrics.json")
    assert set(metrics) >= REPORT_KEYS and metrics["data"] == "test_dir"
    assert metrics["sensitivity"] >= 0.95 and "optimistic" in metrics["note"]
    chosen = read_json(bundle / "bundle.json")["threshold"]
    assert chosen["rule"] == "recall>=0.95"
    assert read_json(bundle / "preprocessing.json")["threshold"] == chosen["value"]
    assert metrics["threshold"] == chosen["value"]
    with Image.open(bundle / "training_curves.png") as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]
    evaluated = json.loads(run_cli("evaluate", "--model", bundle, "--format", "json").stdout)
    assert evaluated["sensitivity"] == metrics["sensitivity"]  # same data, same numbers
    assert "optimistic" in evaluated["note"]


def test_predict_output_file(tmp_path, binary_bundle, binary_tree):
    out = tmp_path / "preds.csv"
    result = run_cli("predict", "--model", binary_bundle, "--output", out, binary_tree / "test_set")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "wrote 8 prediction(s)" in result.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("path,label,probability") and len(lines) == 9


def test_a_folder_with_some_of_the_classes_is_evaluated_on_those(
    tmp_path, multi_bundle, multi_tree
):
    for name in ("checker", "vstripes"):
        shutil.copytree(multi_tree / "test_set" / name, tmp_path / "subset" / name)
    result = run_cli("evaluate", "--model", multi_bundle, "--format", "json", tmp_path / "subset")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["images_per_class"] == {"checker": 4, "vstripes": 4}
    assert report["absent_classes"] == ["hstripes"]
    assert set(report["per_class"]) == {"checker", "vstripes"}
    assert report["n_images"] == 8 and len(report["confusion_matrix"]["matrix"]) == 3
    assert "has no folder for class(es) hstripes" in result.stderr
    table = run_cli("evaluate", "--model", multi_bundle, tmp_path / "subset")
    assert "absent:    hstripes" in table.stdout


def test_threshold_on_a_multiclass_model_is_refused(multi_bundle, multi_tree):
    result = run_cli(
        "evaluate", "--model", multi_bundle, "--threshold", "0.7", multi_tree / "test_set"
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --threshold 0.7: only binary models")


def test_an_int8_export_of_a_multiclass_model_is_evaluable(tmp_path, multi_bundle, multi_tree):
    # int8 softmax outputs are multiples of 1/256 and summed to 0.996: scikit-learn's
    # multi-class ROC AUC refused them as "not probabilities".
    out = tmp_path / "m8.tflite"
    exported = run_cli(
        "export", "--model", multi_bundle, "--format", "tflite", "--quantize", "int8", "--out", out
    )
    assert exported.exit_code == 0, exported.output
    result = run_cli("evaluate", "--model", out, "--format", "json", multi_tree / "test_set")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    keras = json.loads(
        run_cli(
            "evaluate", "--model", multi_bundle, "--format", "json", multi_tree / "test_set"
        ).stdout
    )
    assert report["roc_auc"] is not None and abs(report["roc_auc"] - keras["roc_auc"]) < 0.1
    rows = json.loads(
        run_cli("predict", "--model", out, "--format", "json", multi_tree / "test_set").stdout
    )
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
