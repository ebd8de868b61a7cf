"""Choosing a binary model's decision threshold from validation predictions.

A screening user cares about where the threshold sits: `recall>=0.95` finds the highest
threshold that still catches 95% of positives, so specificity is as good as it can be at that
sensitivity. The rules (config key `train.threshold`):

    0.5             a fixed threshold
    youden          maximise sensitivity + specificity - 1 (Youden's J)
    f1              maximise F1 of the positive class
    recall>=0.95    the highest threshold with sensitivity >= 0.95
    specificity>=0.9  the lowest threshold with specificity >= 0.9

The positive class is class index 1 (the second class folder, sorted), whose probability the
sigmoid output gives.
"""

from __future__ import annotations

import re

import numpy as np

RULE = re.compile(r"^(youden|f1|(recall|sensitivity|specificity)\s*>=\s*(0?\.\d+|1(\.0*)?))$")


def is_rule(value) -> bool:
    return isinstance(value, str) and bool(RULE.match(value.strip()))


def choose_threshold(y_true, p1, rule) -> float:
    """Returns the threshold that `rule` picks on these labels and P(class 1) scores.

    Args:
        y_true: 0/1 labels, shape [N]; both classes must be present.
        p1: predicted P(class 1), shape [N].
        rule: a float (returned as is) or a rule string from this module's docstring.
    """
    if not isinstance(rule, str):
        return float(rule)
    from sklearn.metrics import precision_recall_curve, roc_curve

    y_true = np.asarray(y_true, dtype=int)
    p1 = np.asarray(p1, dtype=float)
    if len(set(y_true.tolist())) < 2:
        raise ValueError("a threshold rule needs both classes in the validation data")
    rule = rule.strip()
    # roc_curve's thresholds are decreasing, predictions are positive when p >= threshold, and
    # its first threshold is +inf (nothing positive): clip it into (0, 1].
    fpr, tpr, thresholds = roc_curve(y_true, p1, drop_intermediate=False)
    thresholds = np.clip(thresholds, 0.0, 1.0)
    if rule == "youden":
        best = int(np.argmax(tpr - fpr))
        return _valid(thresholds[best])
    if rule == "f1":
        precision, recall, pr_thresholds = precision_recall_curve(y_true, p1)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        return _valid(pr_thresholds[int(np.argmax(f1))])
    match = re.match(r"(\w+)\s*>=\s*(.+)", rule)
    assert match is not None, f"not a threshold rule: {rule!r}"  # callers pass is_rule values
    kind, target = match.groups()
    target = float(target)
    if kind in ("recall", "sensitivity"):
        index = int(np.argmax(tpr >= target - 1e-12))  # first (highest) threshold reaching it
        return _valid(thresholds[index])
    ok = np.flatnonzero(1 - fpr >= target - 1e-12)  # specificity: last (lowest) reaching it
    return _valid(thresholds[ok[-1]])


def _valid(threshold: float) -> float:
    # A threshold of exactly 0 would call everything positive; keep it strictly inside (0, 1].
    return float(min(max(threshold, 1e-7), 1.0))
