"""From probabilities and embeddings to `Issue` rows: the review's decisions, without a model.

Plain NumPy in, `Issue` rows out, so the whole ranking is tested on made-up probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnclf.review import neighbours, ranking
from cnnclf.review.issues import Issue, order

# check-data findings worth a person's look in a review (the rest are conversions it applies).
CHECK_KINDS = ("unreadable", "duplicate", "leakage", "format_mismatch", "too_small")


@dataclass(frozen=True)
class Scored:
    """Every scored image: training rows first, then test rows, in one order throughout."""

    class_names: list[str]
    paths: list[str]
    labels: np.ndarray  # given class index per row
    splits: list[str]  # "train" or "test" per row
    probabilities: np.ndarray  # (N, C): out-of-fold for training rows, fold mean for test rows
    features: list[np.ndarray]  # per fold model: (N, D) penultimate-layer embeddings
    thumbnails: np.ndarray | None = None  # (N, s, s) pixels.thumbnails: confirms duplicates


def find_issues(scored: Scored, duplicate_threshold: float) -> list[Issue]:
    """Label issues, ambiguous images, near duplicates and outliers, in the order to fix them."""
    names, probs, labels = scored.class_names, scored.probabilities, scored.labels
    found: list[Issue] = []
    flagged = ranking.label_issues(probs, labels)
    for row in flagged:
        others = probs[row].copy()
        others[labels[row]] = -1.0
        found.append(
            _issue(
                scored, row, names[int(np.argmax(others))], 1.0 - probs[row, labels[row]], "label"
            )
        )
    flagged_set = set(flagged.tolist())
    scores = ranking.ambiguity_scores(probs, labels)
    for row in ranking.ambiguous(probs, labels):
        if row not in flagged_set:
            found.append(_issue(scored, row, "", scores[row], "ambiguous"))
    pairs = neighbours.near_duplicates(scored.features, scored.thumbnails, duplicate_threshold)
    for i, j, similarity in pairs:
        found.append(
            _issue(
                scored,
                j,
                "",
                similarity,
                "near_duplicate",
                f"a copy of {scored.paths[i]} ({scored.splits[i]})",
            )
        )
    train = np.array([split == "train" for split in scored.splits])
    space = neighbours.joint_space(scored.features)
    distances = neighbours.class_distances(space, labels, len(names), train)
    rows, outlier_scores = neighbours.outliers(distances)
    for row, score in zip(rows, outlier_scores):
        found.append(_issue(scored, row, "", float(score), "outlier", "far from every class"))
    return order(found)


def _issue(scored: Scored, row, suggested: str, score: float, kind: str, detail: str = "") -> Issue:
    row = int(row)
    return Issue(
        scored.paths[row],
        scored.class_names[int(scored.labels[row])],
        suggested,
        float(score),
        kind,
        scored.splits[row],
        detail,
    )


def check_issues(problems: list[dict]) -> list[Issue]:
    """check-data's findings (its `problems` JSON rows) that a review lists."""
    return [
        Issue(p["path"], "", "", 1.0, p["kind"], "", p.get("detail") or p.get("advice", ""))
        for p in problems
        if p["kind"] in CHECK_KINDS
    ]
