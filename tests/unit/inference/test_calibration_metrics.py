"""ECE (15 bins, top label) and the Brier score on arrays whose answers are known."""

import numpy as np
import pytest

from cnnclf.inference.calibration_metrics import (
    brier_score,
    calibration_report,
    ece_noise,
    expected_calibration_error,
    reliability,
)


def test_ece_of_a_known_miscalibration():
    # 10 predictions at 0.9 confidence, 6 right: a gap of 0.3 in one bin.
    probs = np.array([[0.9, 0.1]] * 10)
    labels = np.array([0] * 6 + [1] * 4)
    assert expected_calibration_error(probs, labels, "categorical") == pytest.approx(0.3)
    mean_conf, accuracy, counts = reliability(probs, labels, "categorical")
    assert counts.sum() == 10 and counts[13] == 10  # 0.9 falls in (0.8667, 0.9333]
    assert accuracy[13] == pytest.approx(0.6) and mean_conf[13] == pytest.approx(0.9)


def test_a_calibrated_sample_has_a_small_ece():
    rng = np.random.default_rng(0)
    p1 = rng.random(20000)
    labels = (rng.random(20000) < p1).astype(int)
    assert expected_calibration_error(p1, labels, "binary") < 0.02


def test_binary_and_two_column_softmax_agree():
    p1 = np.array([0.2, 0.7, 0.95, 0.4])
    labels = np.array([0, 1, 0, 1])
    two = np.stack([1 - p1, p1], axis=1)
    assert expected_calibration_error(p1, labels, "binary") == pytest.approx(
        expected_calibration_error(two, labels, "categorical")
    )
    # Brier over both columns counts each error twice.
    assert brier_score(two, labels, "categorical") == pytest.approx(
        2 * brier_score(p1, labels, "binary")
    )
    assert brier_score(p1, labels, "binary") == pytest.approx(np.mean((p1 - labels) ** 2))


def test_multi_label_counts_every_image_and_class_pair():
    probs = np.array([[0.9, 0.2], [0.8, 0.6]])
    labels = np.array([[1, 0], [0, 1]])
    assert brier_score(probs, labels, "multi_label") == pytest.approx(
        (0.01 + 0.04 + 0.64 + 0.16) / 4
    )


def test_the_report_gives_before_and_after_only_with_a_temperature():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    labels = np.array([0, 2])
    assert set(calibration_report(probs, labels, "categorical")) == {
        "bins",
        "ece",
        "ece_noise",
        "ece_noise_p95",
        "brier",
    }
    report = calibration_report(probs, labels, "categorical", 2.0)
    assert report["temperature"] == 2.0
    assert report["ece_uncalibrated"] != report["ece"]


def test_the_noise_is_what_calibrated_probabilities_show_and_shrinks_with_more_images():
    rng = np.random.default_rng(3)
    means, p95s, eces = [], [], []
    for n in (200, 5000):
        p1 = rng.uniform(0.05, 0.95, n)
        labels = (rng.random(n) < p1).astype(int)  # calibrated by construction
        mean, p95 = ece_noise(p1, labels, "binary")
        means.append(mean)
        p95s.append(p95)
        eces.append(expected_calibration_error(p1, labels, "binary"))
    assert means[1] < means[0] / 3  # about 1/sqrt(n)
    for mean, p95, ece in zip(means, p95s, eces):
        assert mean < p95 and 0.3 * mean < ece < 3 * mean
    # Seeded and drawn in order of confidence: the same images in any order, the same figures.
    order = rng.permutation(len(p1))
    assert ece_noise(p1[order], labels[order], "binary") == (means[1], p95s[1])
    # Certain and right: nothing to sample, no noise.
    assert ece_noise(np.array([1.0, 0.0]), np.array([1, 0]), "binary") == (0.0, 0.0)
