"""choose_threshold and is_rule (cnnclf/inference/thresholds.py) on small hand-made scores."""

import numpy as np
import pytest

from cnnclf.inference.thresholds import choose_threshold, is_rule

# Six negatives, then four positives; the scores interleave at 0.45/0.55.
Y = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
P = [0.05, 0.1, 0.2, 0.3, 0.45, 0.55, 0.5, 0.7, 0.8, 0.9]


@pytest.mark.parametrize(
    "text", ["youden", "f1", "recall>=0.95", "sensitivity >= .9", "specificity>=1", " f1 "]
)
def test_rule_strings_are_recognised(text):
    assert is_rule(text)


@pytest.mark.parametrize("value", ["recall>0.9", "recall>=1.5", "precision>=0.9", "", 0.5, None])
def test_anything_else_is_not_a_rule(value):
    assert not is_rule(value)


def test_a_number_is_returned_as_it_is():
    assert choose_threshold(Y, P, 0.3) == 0.3
    assert isinstance(choose_threshold(Y, P, 1), float)


def test_full_recall_is_the_lowest_positive_score():
    # The highest threshold that still calls every positive positive.
    assert choose_threshold(Y, P, "recall>=1.0") == pytest.approx(0.5)


def test_full_specificity_is_the_lowest_threshold_above_every_negative():
    threshold = choose_threshold(Y, P, "specificity>=1.0")
    assert threshold == pytest.approx(0.7)
    assert not any(p >= threshold for p, y in zip(P, Y) if y == 0)


def test_youden_separates_perfectly_separable_scores():
    y = [0, 0, 0, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]
    threshold = choose_threshold(y, p, "youden")
    assert 0.3 < threshold <= 0.6
    assert (np.asarray(p) >= threshold).astype(int).tolist() == y


def test_a_rule_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([1, 1, 1], [0.2, 0.5, 0.9], "f1")


def test_a_rule_never_returns_zero():
    # Every threshold reaches recall 0; the lowest one on the curve is 0, kept strictly above.
    threshold = choose_threshold([0, 1], [0.0, 0.0], "specificity>=0.0")
    assert 0 < threshold <= 1
