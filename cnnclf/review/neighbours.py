"""Near duplicates and outliers in the fold models' embedding space (the penultimate layer).

The space: each fold model's embedding of an image, centred on that model's mean embedding
(ReLU features all point into one orthant, so raw cosines are high for any two images), scaled
to unit length, and the K models' vectors joined and divided by sqrt(K). The dot product of two
such vectors is the mean over the fold models of their centred cosine similarity, so one model's
quirk cannot make or break a pair on its own.

- near duplicate: a pair whose centred cosine reaches DUPLICATE_SIMILARITY (0.98) in every
  fold model (a candidate) and whose pixels confirm it (pixels.py: a resized, re-encoded or
  slightly shifted copy, which exact hashes miss), within a split or across train and test;
  each image is reported once, with its most similar partner;
- outlier: an image far from every class: its distance 1 - cos to the nearest class mean (of
  the training images given that label) exceeds the median distance by more than
  OUTLIER_MADS robust standard deviations (1.4826 x the median absolute deviation), and
  OUTLIER_DISTANCE (1.0: it points away from every class mean).

Example:
    pairs = near_duplicates([features_fold1, features_fold2], thumbs)  # [(i, j, similarity)]
"""

from __future__ import annotations

import numpy as np

from cnnclf.review import pixels

DUPLICATE_SIMILARITY = 0.98
OUTLIER_MADS = 4.0
OUTLIER_DISTANCE = 1.0  # and at least this far (cos < 0: pointing away from every class mean)
# Rows compared at a time: bounds memory at BLOCK x N floats whatever N is.
BLOCK = 1024


def joint_space(features: list[np.ndarray]) -> np.ndarray:
    """The fold models' embeddings (each (N, D_k)) as one (N, sum D_k) array of unit rows."""
    parts = [unit_rows(f) for f in features]
    return np.concatenate(parts, axis=1) / np.sqrt(len(parts))


def unit_rows(features: np.ndarray) -> np.ndarray:
    """One model's embeddings, centred on their mean and scaled to unit length."""
    centred = features - features.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 0)


def near_duplicates(
    features: list[np.ndarray],
    thumbs: np.ndarray | None = None,
    threshold: float = DUPLICATE_SIMILARITY,
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, similarity), i < j: copies of one picture, most similar first.

    A candidate pair's centred cosine reaches `threshold` in every fold model; with `thumbs`
    (pixels.thumbnails of the same rows) it must also pass pixels.confirmed, and the
    similarity reported is the thumbnails' correlation, else the smallest cosine. Each image
    is reported once at most, with its most similar partner.
    """
    units = [unit_rows(f) for f in features]
    n = len(units[0]) if units else 0
    best: dict[int, tuple[int, float]] = {}
    for start in range(0, n, BLOCK):
        block = np.min([u[start : start + BLOCK] @ u.T for u in units], axis=0)
        candidate = block >= threshold
        if thumbs is not None:
            picture = pixels.picture_block(thumbs, start, start + len(block))
            candidate &= picture >= pixels.PICTURE_CORRELATION - 1e-4  # float32 rounding
        rows, cols = np.nonzero(candidate)
        rows = rows + start
        keep = cols > rows  # each pair once, never an image with itself
        rows, cols = rows[keep], cols[keep]
        values = block[rows - start, cols]
        if thumbs is not None:
            copies, values = pixels.confirmed(thumbs, rows, cols)
            rows, cols, values = rows[copies], cols[copies], values[copies]
        for i, j, value in zip(rows.tolist(), cols.tolist(), values.tolist()):
            if value > best.get(j, (0, -2.0))[1]:
                best[j] = (i, value)
    pairs = [(i, j, value) for j, (i, value) in best.items()]
    pairs.sort(key=lambda p: -p[2])
    return pairs


def class_distances(
    space: np.ndarray, labels: np.ndarray, classes: int, reference: np.ndarray | None = None
) -> np.ndarray:
    """(N, classes): 1 - cos between each row and each class's mean.

    A class's mean is over the `reference` rows (a boolean mask; default all) labelled it:
    test images are measured against what the models learned from, not against themselves.
    """
    reference = np.ones(len(space), bool) if reference is None else reference
    means = np.zeros((classes, space.shape[1]))
    for j in range(classes):
        rows = reference & (labels == j)
        if rows.any():
            means[j] = space[rows].mean(axis=0)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    means = np.divide(means, norms, out=np.zeros_like(means), where=norms > 0)
    rows = np.linalg.norm(space, axis=1, keepdims=True)
    unit = np.divide(space, rows, out=np.zeros_like(space), where=rows > 0)
    return 1.0 - unit @ means.T


def outliers(distances: np.ndarray, mads: float = OUTLIER_MADS) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores): rows far from every class, farthest first, with a 0..1 score.

    `distances` is `class_distances`' output; an image counts by its nearest class.
    """
    nearest = distances.min(axis=1)
    median = np.median(nearest)
    spread = 1.4826 * np.median(np.abs(nearest - median))
    limit = max(median + mads * spread, OUTLIER_DISTANCE)
    rows = np.flatnonzero(nearest > limit)
    rows = rows[np.argsort(-nearest[rows], kind="stable")]
    return rows, np.clip(nearest[rows] / 2.0, 0.0, 1.0)  # 1 - cos lies in 0..2
