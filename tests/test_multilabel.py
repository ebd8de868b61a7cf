"""Multi-label classification through the CLI (issue 26, second part): a label file with
several labels per image trains one sigmoid per class, and predict, evaluate and the bundle
carry per-class labels, probabilities and thresholds. Single-label runs are untouched (their
own tests keep passing)."""

import json
import re

import pytest
from helpers import read_json, run_cli, write_config
from multilabel_data import CLASSES, write_label_file
from PIL import Image


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """train.csv (24 images, every combination of 3 labels, one with none) and test.csv."""
    folder = tmp_path_factory.mktemp("multilabel")
    write_label_file(folder, "train", 24, 0)
    write_label_file(folder, "test", 8, 100)
    return folder


@pytest.fixture(scope="module")
def bundle(labelled, tmp_path_factory):
    work = tmp_path_factory.mktemp("run")
    config = write_config(
        work / "c.yaml",
        labelled,
        data={
            "train_dir": str(labelled / "train.csv"),
            "test_dir": str(labelled / "test.csv"),
            "image_size": [16, 16],
            "batch_size": 8,
        },
        augment={"rescale": "1/255"},
        train={"epochs": 2, "seed": 3, "threshold": "f1", "class_weight": "balanced"},
    )
    result = run_cli("train", "--config", config, "--out", work / "bundle")
    assert result.exit_code == 0, result.output
    (work / "train_output.txt").write_text(result.output)
    return work / "bundle"


@pytest.mark.slow
def test_train_writes_a_multi_label_bundle(bundle):
    preprocessing = read_json(bundle / "preprocessing.json")
    assert preprocessing["class_mode"] == "multi_label"
    assert len(preprocessing["thresholds"]) == 3
    assert all(0 < t <= 1 for t in preprocessing["thresholds"])
    manifest = read_json(bundle / "bundle.json")
    assert manifest["threshold"]["rule"] == "f1"
    assert set(manifest["threshold"]["per_class"]) == set(CLASSES)
    assert manifest["image_counts"] == {"train": 24, "validation": 8}  # not labels per class
    [closing] = [
        line
        for line in (bundle.parent / "train_output.txt").read_text().splitlines()
        if line.startswith("bundle: ")
    ]
    assert " on 8 images" in closing and " on 24 training images" in closing, closing
    history = read_json(bundle / "history.json")
    assert {"auc", "val_auc", "accuracy", "val_accuracy"} <= set(history)
    metrics = read_json(bundle / "metrics.json")
    assert metrics["multi_label"] and "mean_average_precision" in metrics
    assert "thresholds were chosen on this same validation data" in metrics["note"]


@pytest.mark.slow
def test_predict_lists_the_labels_over_threshold_in_every_format(bundle, labelled):
    image = labelled / "img" / "test_000.png"
    result = run_cli("predict", image, "--model", bundle, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert set(row) == {"path", "labels", "probabilities", "thresholds"}
    assert set(row["probabilities"]) == set(CLASSES) == set(row["thresholds"])
    expected = [c for c in CLASSES if row["probabilities"][c] >= row["thresholds"][c]]
    assert sorted(row["labels"]) == sorted(expected)
    csv = run_cli("predict", image, "--model", bundle, "--format", "csv").stdout.splitlines()
    assert csv[0] == "path,labels,p_left,p_right,p_top"
    assert csv[1].split(",")[1] == " ".join(row["labels"])
    table = run_cli("predict", image, "--model", bundle).stdout.splitlines()
    assert table[1].startswith("path") and "labels" in table[1]
    shown = ", ".join(f"{c} {row['probabilities'][c]:.2f}" for c in row["labels"])
    assert table[2].endswith(shown or "(none)")


@pytest.mark.slow
def test_evaluate_reports_multi_label_metrics(bundle, labelled):
    result = run_cli("evaluate", labelled / "test.csv", "--model", bundle, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_images"] == 8 and report["multi_label"]
    for key in ("mean_average_precision", "subset_accuracy", "hamming_loss", "micro_avg"):
        assert key in report
    assert report["label_cardinality"]["true"] == pytest.approx(12 / 8)
    per_class = report["per_class"]["top"]
    assert {"precision", "recall", "f1", "average_precision", "roc_auc"} <= set(per_class)
    assert sum(per_class["confusion"].values()) == 8
    plots = labelled.parent / "plots"
    table = run_cli("evaluate", labelled / "test.csv", "--model", bundle, "--plots", plots)
    assert "mAP (macro average precision)" in table.stdout and "Hamming loss" in table.stdout
    calibration = report["calibration"]  # over every (image, class) pair
    noise = f"{calibration['ece_noise']:.4f} / {calibration['ece_noise_p95']:.4f}"
    for label, value in (
        (r"ECE \(15 bins, every image-class pair\)", f"{calibration['ece']:.4f}"),
        (r"ECE from sampling noise alone \(mean / 95%\)", noise),
        ("Brier score", f"{calibration['brier']:.4f}"),
    ):
        assert re.search(rf"^{label} +{re.escape(value)}$", table.stdout, re.M), label
    assert sorted(p.name for p in plots.iterdir()) == [f"pr_curve_{c}.png" for c in range(3)]


@pytest.mark.slow
def test_a_validation_split_of_a_multi_label_file_trains(labelled, tmp_path):
    config = write_config(
        tmp_path / "c.yaml",
        labelled,
        data={
            "train_dir": str(labelled / "train.csv"),
            "test_dir": None,
            "validation_split": 0.25,
            "image_size": [16, 16],
        },
        augment={"rescale": "1/255"},
        train={"epochs": 1, "seed": 3, "keep_best": "val_auc"},
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert read_json(tmp_path / "b" / "preprocessing.json")["thresholds"] == [0.5] * 3


def test_val_auc_on_a_single_label_run_is_one_line_before_training(tmp_path):
    from helpers import make_tree

    tree = make_tree(tmp_path / "tree", n_train=4, n_test=2)
    config = write_config(tmp_path / "c.yaml", tree, train={"epochs": 1, "keep_best": "val_auc"})
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: train.keep_best: val_auc is logged for multi-label models only; use val_loss "
        "or val_accuracy"
    )


@pytest.mark.slow
def test_preview_augment_captions_a_multi_label_image_with_its_labels(labelled, tmp_path):
    config = write_config(
        tmp_path / "c.yaml",
        labelled,
        data={"train_dir": str(labelled / "train.csv"), "test_dir": None, "image_size": [16, 16]},
        augment={"rescale": "1/255", "horizontal_flip": True},
    )
    out = tmp_path / "grid.png"
    result = run_cli("preview-augment", "--config", config, "--n", "4", "--out", out)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] > 0
