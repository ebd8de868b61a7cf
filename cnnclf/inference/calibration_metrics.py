"""How far a model's probabilities are from the frequencies they claim: ECE and Brier score.

Expected calibration error (Guo et al. 2017; Naeini et al. 2015) is top-label: each image's
confidence is the probability of the class it is given, images are put into `BINS` equal-width
confidence bins, and ECE is the image-weighted mean of |accuracy - mean confidence| per bin.
0.03 means the stated confidence is, on average, three points off the observed accuracy.

The Brier score is the mean squared distance between the probabilities and the one-hot truth:
over all classes for a softmax model (0 to 2), of P(class 1) for a binary model (0 to 1), and
over every (image, class) pair for a multi-label model, where each sigmoid is its own yes/no
question and its ECE is likewise taken over every pair.

ECE is never zero on a finite test set, even for perfectly calibrated probabilities: each bin's
accuracy is a sample. `ece_noise` measures that sampling noise for the images at hand: on a few
hundred images with many mid-range confidences it is 0.02 to 0.04, on 2,000 images of a good
model about 0.01 (docs/benchmarks/2026-12-04-calibration-tta.md). An ECE near its mean is as
calibrated as the data can show; one above its 95th percentile is miscalibration.

Plain NumPy: evaluate, training and the benchmark all call these on arrays.
"""

from __future__ import annotations

import numpy as np

BINS = 15


def top_label(probs: np.ndarray, labels: np.ndarray, class_mode: str):
    """(confidence, correct) per prediction: what ECE and the reliability diagram bin.

    Args:
        probs: [N, K] softmax rows, [N] P(class 1) for binary, [N, K] sigmoids.
        labels: class indices, 0/1, or multi-hot rows [N, K].
        class_mode: "categorical", "binary" or "multi_label".
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if class_mode == "categorical":
        return p.max(axis=1), p.argmax(axis=1) == y
    p, y = p.reshape(-1), y.reshape(-1)
    return np.maximum(p, 1 - p), (p >= 0.5) == (y == 1)


def reliability(probs: np.ndarray, labels: np.ndarray, class_mode: str, bins: int = BINS):
    """Per confidence bin: (mean confidence, accuracy, count); NaN for an empty bin."""
    confidence, correct = top_label(probs, labels, class_mode)
    index = _bin_of(confidence, bins)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, confidence, bins) / counts
        accuracy = np.bincount(index, correct.astype(float), bins) / counts
    return mean_conf, accuracy, counts


def expected_calibration_error(probs, labels, class_mode: str, bins: int = BINS) -> float:
    """Top-label ECE in [0, 1]; see the module docstring."""
    mean_conf, accuracy, counts = reliability(probs, labels, class_mode, bins)
    used = counts > 0
    if not used.any():
        return float("nan")
    gaps = np.abs(accuracy[used] - mean_conf[used])
    return float((gaps * counts[used]).sum() / counts.sum())


# 200 draws: the mean's standard error is a few percent of it, and 100,000 images cost about
# 70 ms (a multi-label 10,000 x 50 set 0.3 s).
NOISE_DRAWS = 200


def _bin_of(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Each confidence's bin; bins are (lo, hi], so a confidence of exactly 1.0 falls in the
    last one."""
    return np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)


def ece_noise(probs, labels, class_mode: str, bins: int = BINS, draws: int = NOISE_DRAWS):
    """(mean, 95th percentile) of the ECE perfectly calibrated probabilities with these
    confidences show on this many images: each image drawn right with the probability it
    claims, `draws` times. Seeded, and drawn in order of confidence, so the same images in
    any order give the same figures."""
    confidence, _ = top_label(probs, labels, class_mode)
    if not len(confidence):
        return float("nan"), float("nan")
    confidence = np.sort(confidence)
    index = _bin_of(confidence, bins)
    counts = np.bincount(index, minlength=bins)
    used = counts > 0
    mean_conf = np.bincount(index, confidence, bins)[used] / counts[used]
    rng = np.random.default_rng(0)
    eces = []
    for _ in range(draws):
        correct = rng.random(len(confidence)) < confidence
        accuracy = np.bincount(index, correct.astype(float), bins)[used] / counts[used]
        eces.append(float((np.abs(accuracy - mean_conf) * counts[used]).sum()) / len(confidence))
    return float(np.mean(eces)), float(np.percentile(eces, 95))


def brier_score(probs, labels, class_mode: str) -> float:
    """Mean squared error of the probabilities against the truth; see the module docstring."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if class_mode == "categorical":
        onehot = np.eye(p.shape[1])[y.astype(int)]
        return float(((p - onehot) ** 2).sum(axis=1).mean())
    return float(((p.reshape(-1) - y.reshape(-1)) ** 2).mean())


def calibration_report(probs, labels, class_mode: str, temperature=None) -> dict:
    """ECE and Brier of `probs`; with the bundle's `temperature`, also of the probabilities
    the model gave before calibration (recovered from T), so one run shows both.

    Example: {"ece": 0.021, "ece_noise": 0.012, "ece_noise_p95": 0.018, "brier": 0.09,
    "temperature": 1.8, "ece_uncalibrated": 0.064, "brier_uncalibrated": 0.1}
    """
    noise, noise_p95 = ece_noise(probs, labels, class_mode)
    report: dict = {
        "bins": BINS,
        "ece": round(expected_calibration_error(probs, labels, class_mode), 6),
        "ece_noise": round(noise, 6),
        "ece_noise_p95": round(noise_p95, 6),
        "brier": round(brier_score(probs, labels, class_mode), 6),
    }
    if temperature is not None:
        from cnnclf.model.calibration import uncalibrated

        before = uncalibrated(probs, temperature, class_mode)
        report["temperature"] = temperature
        report["ece_uncalibrated"] = round(
            expected_calibration_error(before, labels, class_mode), 6
        )
        report["brier_uncalibrated"] = round(brier_score(before, labels, class_mode), 6)
    return report
