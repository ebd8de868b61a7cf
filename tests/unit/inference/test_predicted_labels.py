"""predicted_labels and classification_metrics (cnnclf/inference/metrics.py): edge cases."""

import numpy as np
import pytest

from cnnclf.inference.metrics import classification_metrics, predicted_labels


def test_binary_scores_at_the_threshold_are_positive():
    probs = np.array([0.2, 0.5, 0.7])
    assert predicted_labels(probs, None).tolist() == [0, 1, 1]  # 0.5 by default
    assert predicted_labels(probs, 0.7).tolist() == [0, 0, 1]
    assert predicted_labels(probs, 0.1).tolist() == [1, 1, 1]


def test_several_classes_take_the_argmax_and_ignore_the_threshold():
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    assert predicted_labels(probs, None).tolist() == [1, 0, 2]
    assert predicted_labels(probs, 0.99).tolist() == [1, 0, 2]


def test_a_perfect_binary_model_scores_one_everywhere():
    report = classification_metrics([0, 0, 1, 1], np.array([0.1, 0.2, 0.8, 0.9]), ["cat", "dog"])
    assert report["accuracy"] == 1.0
    assert report["n_images"] == 4


def test_the_threshold_changes_the_accuracy():
    y, probs = [0, 0, 1, 1], np.array([0.1, 0.6, 0.7, 0.9])
    assert classification_metrics(y, probs, ["cat", "dog"])["accuracy"] == pytest.approx(0.75)
    assert classification_metrics(y, probs, ["cat", "dog"], threshold=0.65)["accuracy"] == 1.0
