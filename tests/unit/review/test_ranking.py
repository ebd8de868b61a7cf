"""Confident learning, folds and neighbours on made-up numbers: no model, milliseconds."""

import numpy as np

from cnnclf.review import neighbours, ranking
from cnnclf.review.folds import stratified_folds


def _noisy(seed=0, n=200, flips=(3, 50, 120)):
    """Two well-separated classes; the rows in `flips` carry the other class's label."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 2
    p1 = np.where(truth == 1, rng.uniform(0.75, 0.99, n), rng.uniform(0.01, 0.25, n))
    probabilities = np.stack([1 - p1, p1], axis=1)
    given = truth.copy()
    given[list(flips)] = 1 - given[list(flips)]
    return probabilities, given


def test_flipped_labels_rank_first():
    probabilities, given = _noisy()
    # Row 3 stays under the confident threshold: not flagged, but next in the full ranking.
    assert ranking.label_issues(probabilities, given).tolist() == [50, 120]
    assert sorted(ranking.ranking(probabilities, given)[:3].tolist()) == [3, 50, 120]


def test_clean_labels_flag_nothing():
    probabilities, given = _noisy(flips=())
    assert len(ranking.label_issues(probabilities, given)) == 0


def test_thresholds_are_per_class_means():
    probabilities = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]])
    assert np.allclose(ranking.class_thresholds(probabilities, np.array([0, 0, 1])), [0.8, 0.8])


def test_no_confident_class_is_ambiguous():
    probabilities = np.array(
        [[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.1, 0.9], [0.34, 0.33, 0.33]]
    )
    assert ranking.ambiguous(probabilities, np.array([0, 1, 2, 0])).tolist() == [3]


def test_folds_are_stratified_and_repeatable():
    labels = [0] * 10 + [1] * 6
    folds = stratified_folds(labels, 3, seed=7)
    assert folds == stratified_folds(labels, 3, seed=7)
    for k in range(3):
        held = [label for label, f in zip(labels, folds) if f == k]
        assert held.count(0) in (3, 4) and held.count(1) == 2


def test_near_duplicates_need_every_model_to_agree():
    a = np.array([[1.0, 0.0], [0.99, 0.01], [0.0, 1.0], [-1.0, 0.3]])
    b = a.copy()
    b[1] = [-1.0, 0.0]  # the second model disagrees about row 1
    assert [p[:2] for p in neighbours.near_duplicates([a, a], threshold=0.98)] == [(0, 1)]
    assert neighbours.near_duplicates([a, b], threshold=0.98) == []


def test_an_image_far_from_every_class_is_an_outlier():
    rng = np.random.default_rng(1)
    space = np.concatenate(
        [rng.normal([5, 0, 0], 0.3, (30, 3)), rng.normal([0, 5, 0], 0.3, (30, 3))]
    )
    space = np.concatenate([space, [[-3.0, -3.0, 5.0]]])
    labels = np.array([0] * 30 + [1] * 30 + [0])
    rows, _ = neighbours.outliers(neighbours.class_distances(space, labels, 2))
    assert rows.tolist() == [60]
