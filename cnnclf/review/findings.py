"""From probabilities and embeddings to `Issue` rows: the review's decisions, without a model.

Plain NumPy in, `Issue` rows out, so the whole ranking is tested on made-up probabilities.

Multi-label data (`Scored.labels` an (N, C) 0/1 matrix) gets one `label` row per flagged
(image, class) pair: `label` is the given set of classes and `suggested` the image's corrected
set (every flagged class of it added or removed, so its rows agree), both space-separated in
class order ('' is the empty set), and `detail` names the class and whether it is missing or
extra. An `ambiguous` image has a class the models are confident about neither way.
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
    labels: np.ndarray  # given class index per row; multi-label: (N, C) 0/1
    splits: list[str]  # "train" or "test" per row
    probabilities: np.ndarray  # (N, C): out-of-fold for training rows, fold mean for test rows
    features: list[np.ndarray]  # per fold model: (N, D) penultimate-layer embeddings
    thumbnails: np.ndarray | None = None  # (N, s, s) pixels.thumbnails: confirms duplicates

    @property
    def multi_label(self) -> bool:
        return self.labels.ndim == 2

    def given(self, row: int) -> str:
        """Row's given label: its class, or (multi-label) its classes space-separated."""
        if self.multi_label:
            return label_set(self.class_names, self.labels[row])
        return self.class_names[int(self.labels[row])]


def label_set(class_names: list[str], row: np.ndarray) -> str:
    """A 0/1 row as the classes it marks, space-separated in class order ('' for none)."""
    return " ".join(class_names[j] for j in np.flatnonzero(row))


def find_issues(scored: Scored, duplicate_threshold: float) -> list[Issue]:
    """Label issues, ambiguous images, near duplicates and outliers, in the order to fix them."""
    found = _multi_label_issues(scored) if scored.multi_label else _label_issues(scored)
    found += _neighbour_issues(scored, duplicate_threshold)
    return order(found)


def _label_issues(scored: Scored) -> list[Issue]:
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
    return found


def _multi_label_issues(scored: Scored) -> list[Issue]:
    """One `label` row per flagged (image, class), then images with an undecided class."""
    names, probs, given = scored.class_names, scored.probabilities, scored.labels
    rows, classes = ranking.multi_label_issues(probs, given)
    quality = ranking.image_quality(probs, given)
    corrected = given.copy()
    corrected[rows, classes] = 1 - corrected[rows, classes]
    found: list[Issue] = []
    for row, j in zip(rows.tolist(), classes.tolist()):
        what = "extra" if given[row, j] else "missing"
        detail = f"{names[j]}: {what} (p={probs[row, j]:.2f})"
        suggested = label_set(names, corrected[row])
        found.append(_issue(scored, row, suggested, 1.0 - quality[row], "label", detail))
    flagged = set(rows.tolist())
    ambiguity = ranking.multi_label_ambiguity(probs, given)
    undecided = [r for r in np.flatnonzero(ambiguity.max(axis=1) > 0) if r not in flagged]
    for row in sorted(undecided, key=lambda r: -ambiguity[r].max()):
        unsure = np.flatnonzero(ambiguity[row])
        unsure = unsure[np.argsort(-ambiguity[row, unsure], kind="stable")]
        detail = "unsure of " + ", ".join(f"{names[j]} (p={probs[row, j]:.2f})" for j in unsure)
        found.append(_issue(scored, row, "", ambiguity[row].max(), "ambiguous", detail))
    return found


def _neighbour_issues(scored: Scored, duplicate_threshold: float) -> list[Issue]:
    """Near duplicates and outliers in the fold models' embedding space."""
    found: list[Issue] = []
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
    rows, outlier_scores = neighbours.outliers(_class_distances(scored, space, train))
    for row, score in zip(rows, outlier_scores):
        found.append(_issue(scored, row, "", float(score), "outlier", "far from every class"))
    return found


def _class_distances(scored: Scored, space: np.ndarray, train: np.ndarray) -> np.ndarray:
    """neighbours.class_distances; multi-label, each class's mean is over the training images
    carrying it (and, when some carry none, those form a group of their own, so an image with
    no label is measured against its kind)."""
    classes = len(scored.class_names)
    if not scored.multi_label:
        return neighbours.class_distances(space, scored.labels, classes, train)
    given = scored.labels
    groups = [(i, int(j)) for i in range(len(given)) for j in np.flatnonzero(given[i])]
    unlabelled = np.flatnonzero(given.sum(axis=1) == 0)
    if np.any(train[unlabelled]):
        groups += [(int(i), classes) for i in unlabelled]
        classes += 1
    members = np.array([i for i, _ in groups], int)
    # One row per (image, group) it belongs to, then every image unlabelled to be measured.
    stacked = np.concatenate([space[members], space])
    labels = np.concatenate([[j for _, j in groups], np.full(len(space), -1)]).astype(int)
    reference = np.concatenate([train[members], np.zeros(len(space), bool)])
    return neighbours.class_distances(stacked, labels, classes, reference)[len(members) :]


def _issue(scored: Scored, row, suggested: str, score: float, kind: str, detail: str = "") -> Issue:
    row = int(row)
    return Issue(
        scored.paths[row],
        scored.given(row),
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
