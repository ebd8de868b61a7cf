"""The multi-label report (inference/metrics.py) and a multi-label output row read as a
prediction (inference/predict.py): figures checked against hand-computed values."""

import numpy as np
import pytest

from cnnclf.inference.metrics import multi_label_report
from cnnclf.inference.predict import interpret_multi_label

NAMES = ["a", "b", "c"]


def test_the_report_counts_what_each_metric_says():
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    p = np.array([[0.9, 0.2, 0.1], [0.8, 0.4, 0.2], [0.3, 0.7, 0.1], [0.6, 0.1, 0.3]])
    report = multi_label_report(y, p, NAMES, [0.5, 0.5, 0.5])
    # predicted: [1,0,0] [1,0,0] [0,1,0] [1,0,0]: one missed b, one false a.
    assert report["subset_accuracy"] == pytest.approx(2 / 4)
    assert report["hamming_loss"] == pytest.approx(2 / 12)
    assert report["accuracy"] == pytest.approx(10 / 12)
    assert report["label_cardinality"] == {"true": 1.0, "predicted": 1.0}
    a = report["per_class"]["a"]
    assert (a["precision"], a["recall"], a["confusion"]) == (
        pytest.approx(2 / 3),
        1.0,
        {"tp": 2, "fp": 1, "fn": 0, "tn": 1},
    )
    assert report["per_class"]["b"]["recall"] == pytest.approx(0.5)
    # c has no positive image: AP and AUC are undefined, left out of the means, not zero.
    assert report["per_class"]["c"]["average_precision"] is None
    assert report["per_class"]["c"]["roc_auc"] is None
    assert report["mean_average_precision"] == pytest.approx(
        np.mean([report["per_class"][n]["average_precision"] for n in ("a", "b")])
    )
    assert report["micro_avg"]["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))


def test_per_class_thresholds_decide_each_class():
    y = np.array([[1, 1], [0, 0]])
    p = np.array([[0.3, 0.3], [0.1, 0.1]])
    report = multi_label_report(y, p, ["a", "b"], [0.25, 0.5])
    assert report["per_class"]["a"]["recall"] == 1.0 and report["per_class"]["b"]["recall"] == 0
    assert report["thresholds"] == {"a": 0.25, "b": 0.5}


def test_a_prediction_lists_the_classes_over_their_thresholds_most_probable_first():
    row = interpret_multi_label(np.array([0.6, 0.9, 0.2]), NAMES, (0.7, 0.5, 0.1), "x.png")
    assert row.labels == ["b", "c"]
    assert row.to_json() == {
        "path": "x.png",
        "labels": ["b", "c"],
        "probabilities": {"a": 0.6, "b": 0.9, "c": 0.2},
        "thresholds": {"a": 0.7, "b": 0.5, "c": 0.1},
    }
    nothing = interpret_multi_label(np.array([0.1, 0.2, 0.3]), NAMES, None, "y.png", top_k=1)
    assert nothing.labels == [] and nothing.to_json()["top_k"] == [
        {"label": "c", "probability": 0.3}
    ]
