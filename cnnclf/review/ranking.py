"""Confident learning on out-of-fold probabilities: which given labels look wrong.

Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels"
(JAIR 2021), as cleanlab's `find_label_issues` does it by default (`prune_by_noise_rate`):

1. per-class thresholds: t_j = the mean predicted probability of class j over the images
   labelled j (how confident the model is, on average, when a label is right);
2. the confident joint C[i][j]: images labelled i whose probability of j reaches t_j (the
   largest such j when several do), calibrated so each row sums to the class's image count;
3. for every pair i != j, the round(C[i][j]) images labelled i with the largest margin
   p_j - p_i are flagged;
4. images whose most probable class is their given label are unflagged; the rest are ranked
   by self-confidence (the probability of the given label), least
   confident first.

Images that reach no class's threshold are `ambiguous`: no class is confident about them.
Implemented here in NumPy; scripts/bench_review.py compares it with cleanlab itself.

Example:
    flagged = label_issues(probabilities, labels)   # row indices, most likely wrong first
"""

from __future__ import annotations

import numpy as np


def class_thresholds(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """t_j: the mean probability of class j over the images labelled j."""
    classes = probabilities.shape[1]
    return np.array(
        [
            probabilities[labels == j, j].mean() if np.any(labels == j) else 1.0
            for j in range(classes)
        ]
    )


def confident_classes(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per image, the class it confidently belongs to (-1: none reaches its threshold)."""
    # A tiny tolerance: an image exactly at the threshold counts, despite rounding.
    above = probabilities >= thresholds[None, :] - 1e-6
    masked = np.where(above, probabilities, -np.inf)
    best = np.argmax(masked, axis=1)
    return np.where(above.any(axis=1), best, -1)


def confident_joint(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """C[i][j], calibrated: row i sums to the number of images labelled i, the whole to N."""
    classes = probabilities.shape[1]
    confident = confident_classes(probabilities, class_thresholds(probabilities, labels))
    joint = np.zeros((classes, classes))
    for given, guess in zip(labels, confident):
        if guess >= 0:
            joint[given, guess] += 1
    counts = np.bincount(labels, minlength=classes).astype(float)
    rows = joint.sum(axis=1, keepdims=True)
    calibrated = np.divide(joint, rows, out=np.zeros_like(joint), where=rows > 0) * counts[:, None]
    total = calibrated.sum()
    return calibrated * (len(labels) / total) if total else calibrated


def label_issues(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Row indices whose given label is likely wrong, least self-confident first.

    Args:
        probabilities: (N, C) out-of-fold probabilities; rows sum to 1.
        labels: (N,) given class indices.
    """
    labels = np.asarray(labels)
    joint = confident_joint(probabilities, labels)
    classes = probabilities.shape[1]
    flagged = np.zeros(len(labels), bool)
    for given in range(classes):
        rows = np.flatnonzero(labels == given)
        # Never prune a class to nothing: keep at least one image of it.
        budget = max(0, len(rows) - 1)
        for other in range(classes):
            if other == given or not budget:
                continue
            n = min(int(np.rint(joint[given, other])), budget)
            if n <= 0:
                continue
            margin = probabilities[rows, other] - probabilities[rows, given]
            flagged[rows[np.argsort(-margin, kind="stable")[:n]]] = True
    # As cleanlab: an image the models predict as its given label is not called mislabeled.
    flagged &= probabilities.argmax(axis=1) != labels
    indices = np.flatnonzero(flagged)
    confidence = probabilities[indices, labels[indices]]
    return indices[np.argsort(confidence, kind="stable")]


def ranking(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Every row, flagged label issues first (in their order), then the rest by self-confidence:
    a full ranking, for precision@k when fewer than k images are flagged."""
    flagged = label_issues(probabilities, labels)
    rest = np.setdiff1d(np.arange(len(labels)), flagged)
    rest = rest[np.argsort(probabilities[rest, labels[rest]], kind="stable")]
    return np.concatenate([flagged, rest]).astype(int)


def ambiguous(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rows no class is confident about (below every class's threshold), most ambiguous first:
    the smallest best ratio p_j / t_j first."""
    thresholds = class_thresholds(probabilities, np.asarray(labels))
    rows = np.flatnonzero(confident_classes(probabilities, thresholds) < 0)
    ratio = (probabilities[rows] / thresholds[None, :]).max(axis=1)
    return rows[np.argsort(ratio, kind="stable")]


def ambiguity_scores(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 - max_j p_j / t_j per row (clipped to 0..1): higher is more ambiguous."""
    thresholds = class_thresholds(probabilities, np.asarray(labels))
    return np.clip(1.0 - (probabilities / thresholds[None, :]).max(axis=1), 0.0, 1.0)


def confusion(given: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts: rows the given label, columns the out-of-fold prediction."""
    matrix = np.zeros((classes, classes), int)
    np.add.at(matrix, (given, predicted), 1)
    return matrix
