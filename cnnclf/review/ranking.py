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

Multi-label data (one sigmoid per class, several labels or none per image) is reviewed one
class at a time, as cleanlab's `find_label_issues(..., multi_label=True)` does: class j is a
binary problem (given 0/1 against [1 - p_j, p_j]) that the steps above solve, so each flag names
an (image, class) pair, a label that is missing or extra. Images are ranked by cleanlab's
image score: the per-class self-confidences (p_j where j is given, else 1 - p_j) sorted from
high to low and averaged by an exponential moving average with alpha 0.8, which the lowest
score dominates. tests/unit/review/test_multi_label_ranking.py compares it with cleanlab.

Example:
    flagged = label_issues(probabilities, labels)   # row indices, most likely wrong first
    rows, classes = multi_label_issues(probabilities, given)   # given: (N, C) 0/1
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


def binary_problem(probabilities: np.ndarray, given: np.ndarray, j: int):
    """Class j of multi-label data as a two-class problem: ([1 - p_j, p_j], given 0/1)."""
    p = probabilities[:, j]
    return np.stack([1.0 - p, p], axis=1), np.asarray(given[:, j], int)


def per_class_issues(probabilities: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(N, C) booleans: True where image i's given 0/1 for class j looks wrong.

    Args:
        probabilities: (N, C) out-of-fold sigmoid outputs (rows need not sum to 1).
        given: (N, C) the given labels, 1 where image i carries class j.
    """
    flagged = np.zeros(given.shape, bool)
    for j in range(given.shape[1]):
        flagged[label_issues(*binary_problem(probabilities, given, j)), j] = True
    return flagged


def self_confidences(probabilities: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(N, C): how much the models agree with each given 0/1 (p_j, or 1 - p_j)."""
    return np.where(np.asarray(given) == 1, probabilities, 1.0 - probabilities)


def image_quality(probabilities: np.ndarray, given: np.ndarray, alpha: float = 0.8) -> np.ndarray:
    """(N,): cleanlab's multi-label quality score, 0..1, low = some label likely wrong.

    The exponential moving average of the self-confidences sorted high to low: the last
    (lowest) weighs alpha, the one before alpha (1 - alpha), and so on, so one wrong label
    sinks an image while a second one sinks it further.
    """
    scores = -np.sort(-self_confidences(probabilities, given), axis=1)
    quality = scores[:, 0]
    for t in range(1, scores.shape[1]):
        quality = alpha * scores[:, t] + (1.0 - alpha) * quality
    return quality


def multi_label_issues(
    probabilities: np.ndarray, given: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, classes): the flagged (image, class) pairs, most likely wrong first.

    Images are ordered by `image_quality` (lowest first); an image's pairs follow one another,
    its least self-confident class first.
    """
    flagged = per_class_issues(probabilities, given)
    rows, classes = np.nonzero(flagged)
    confidence = self_confidences(probabilities, given)[rows, classes]
    order = np.lexsort((confidence, image_quality(probabilities, given)[rows]))
    return rows[order], classes[order]


def multi_label_ambiguity(probabilities: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(N, C): how near each p_j sits to class j's decision point, 0..1 (0: not near it).

    Class j's binary problem has a confident "yes" (p_j at least t_yes, the mean p_j of the
    images given j) and a confident "no" (1 - p_j at least t_no, the mean over the others).
    Between them lies a band the models are sure of neither way; a p_j in the middle half of
    it is near the decision point, scored 1 at its centre and 0.5 at the middle half's edges.
    The whole band would be too wide: about half of the true labels sit below their mean.
    """
    scores = np.zeros(given.shape)
    for j in range(given.shape[1]):
        binary, labels = binary_problem(probabilities, given, j)
        t_no, t_yes = class_thresholds(binary, labels)
        low, high = 1.0 - t_no, t_yes
        if high <= low:  # the models do no better than chance on this class: no band
            continue
        closeness = 1.0 - np.abs(binary[:, 1] - (low + high) / 2) / ((high - low) / 2)
        scores[:, j] = np.where(closeness > 0.5, closeness, 0.0)
    return scores


def confusion(given: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts: rows the given label, columns the out-of-fold prediction."""
    matrix = np.zeros((classes, classes), int)
    np.add.at(matrix, (given, predicted), 1)
    return matrix
