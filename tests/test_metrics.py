"""Metrics and threshold rules against small cases computed by hand."""

import pytest

from cnnclf.inference.metrics import classification_metrics
from cnnclf.inference.thresholds import choose_threshold

# Binary: negatives 0.1 0.4 0.35 0.8, positives 0.9 0.65 0.3 0.7.
Y = [0, 0, 0, 0, 1, 1, 1, 1]
P1 = [0.1, 0.4, 0.35, 0.8, 0.9, 0.65, 0.3, 0.7]
NAMES = ["healthy", "tumour"]


def test_binary_report_by_hand():
    # At 0.5: TP 3 (0.9 0.65 0.7), FN 1 (0.3), TN 3, FP 1 (0.8).
    r = classification_metrics(Y, P1, NAMES, threshold=0.5)
    assert r["n_images"] == 8 and r["accuracy"] == 0.75
    assert r["confusion_matrix"] == {"labels": NAMES, "matrix": [[3, 1], [1, 3]]}
    assert r["sensitivity"] == 0.75 and r["specificity"] == 0.75
    assert r["per_class"]["tumour"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    # AUC = share of (positive, negative) pairs ranked right: (4 + 3 + 1 + 3) / 16.
    assert r["roc_auc"] == pytest.approx(11 / 16)
    assert r["threshold"] == 0.5 and r["positive_class"] == "tumour"


def test_threshold_moves_the_confusion_matrix():
    r = classification_metrics(Y, P1, NAMES, threshold=0.3)
    assert r["confusion_matrix"]["matrix"] == [[1, 3], [0, 4]]
    assert r["sensitivity"] == 1.0 and r["specificity"] == 0.25


def test_three_classes_by_hand():
    y = [0, 0, 1, 1, 2, 2]
    probs = [
        [0.7, 0.2, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.8, 0.1],
        [0.3, 0.6, 0.1],
        [0.1, 0.2, 0.7],
        [0.5, 0.1, 0.4],
    ]
    r = classification_metrics(y, probs, ["a", "b", "c"])
    assert r["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert r["per_class"]["c"]["recall"] == 0.5
    assert r["macro_avg"]["recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    # One-vs-rest AUCs: a: 6/8 (0.7 and 0.2 against 0.1 0.3 0.1 0.5), b: 1.0, c: 1.0
    # (0.7 and 0.4 against 0.1 0.3 0.1 0.1).
    assert r["roc_auc"] == pytest.approx((6 / 8 + 1.0 + 1.0) / 3)
    assert "threshold" not in r and "sensitivity" not in r


@pytest.mark.parametrize(
    "rule, expected",
    [
        (0.42, 0.42),
        ("youden", 0.65),  # TPR - FPR = 0.75 - 0.25, the best
        ("f1", 0.65),  # F1 0.75, against 8/11 at 0.3
        ("recall>=0.95", 0.3),  # the highest threshold catching all 4 positives
        ("recall>=0.7", 0.65),
        ("specificity>=0.75", 0.65),  # the lowest threshold with 3 of 4 negatives right
    ],
)
def test_threshold_rules_by_hand(rule, expected):
    assert choose_threshold(Y, P1, rule) == pytest.approx(expected)
