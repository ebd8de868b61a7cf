"""Per-class confident learning for multi-label data, on made-up sigmoid outputs: no model.

The comparison with cleanlab runs where cleanlab is installed (a bench-only dependency).
"""

import warnings

import numpy as np
import pytest

from cnnclf.review import ranking
from cnnclf.review.findings import Scored, find_issues
from cnnclf.review.folds import check_fold_classes, multi_label_folds


def _noisy(seed=0, n=240, classes=3, flips=((3, 0), (50, 1), (120, 2), (121, 0))):
    """Independent labels with well-separated sigmoids; the (row, class) pairs in `flips` have
    their given 0/1 flipped (a missing or an extra label)."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, classes)) < 0.4).astype(int)
    probabilities = np.where(truth == 1, rng.uniform(0.8, 0.99, truth.shape), 0.0)
    probabilities = np.where(truth == 0, rng.uniform(0.01, 0.2, truth.shape), probabilities)
    given = truth.copy()
    for row, j in flips:
        given[row, j] = 1 - given[row, j]
        probabilities[row, j] = 0.99 if truth[row, j] else 0.01  # the models are sure
    return probabilities, given


def test_flipped_labels_are_the_flagged_pairs():
    probabilities, given = _noisy()
    rows, classes = ranking.multi_label_issues(probabilities, given)
    assert set(zip(rows.tolist(), classes.tolist())) == {(3, 0), (50, 1), (120, 2), (121, 0)}


def test_an_image_with_two_wrong_labels_ranks_first():
    flips = ((10, 0), (10, 1), (60, 2), (90, 1))
    probabilities, given = _noisy(flips=flips)
    rows, _ = ranking.multi_label_issues(probabilities, given)
    assert rows[:2].tolist() == [10, 10]  # its pairs follow one another
    quality = ranking.image_quality(probabilities, given)
    assert quality[10] < min(quality[60], quality[90])


def test_clean_labels_flag_nothing():
    probabilities, given = _noisy(flips=())
    rows, _ = ranking.multi_label_issues(probabilities, given)
    assert len(rows) == 0


def test_image_quality_is_cleanlabs_moving_average():
    probabilities = np.array([[0.9, 0.2, 0.6]])
    given = np.array([[1, 0, 0]])
    # self-confidences 0.9, 0.8, 0.4, high to low: 0.9, then 0.8*0.8 + 0.2*0.9, then
    # 0.8*0.4 + 0.2*0.82.
    assert ranking.image_quality(probabilities, given)[0] == pytest.approx(0.484)


def test_a_class_the_models_cannot_decide_is_ambiguous():
    probabilities, given = _noisy(flips=())
    probabilities[7] = [0.5, 0.1, 0.9] if given[7, 2] else [0.5, 0.1, 0.1]
    given[7, 1] = 0
    scores = ranking.multi_label_ambiguity(probabilities, given)
    assert np.flatnonzero(scores.max(axis=1)).tolist() == [7]
    assert np.flatnonzero(scores[7]).tolist() == [0]


def _scored(probabilities, given, names=("atelectasis", "effusion", "nodule")):
    n = len(given)
    rng = np.random.default_rng(5)
    features = [rng.normal(size=(n, 8)) + given @ rng.normal(size=(3, 8)) * 4]
    return Scored(
        list(names), [f"img/{i:03d}.png" for i in range(n)], given, ["train"] * n,
        probabilities, features,
    )  # fmt: skip


def test_issue_rows_name_the_class_and_the_corrected_set():
    probabilities, given = _noisy(flips=((3, 0), (50, 1)))
    given[3] = [0, 1, 1]  # truly effusion + nodule: atelectasis is missing after the flip
    probabilities[3] = [0.95, 0.9, 0.92]
    given[50] = [0, 1, 0]  # truly nothing: effusion is extra
    probabilities[50] = [0.05, 0.03, 0.04]
    issues = find_issues(_scored(probabilities, given), duplicate_threshold=0.999)
    labels = [i for i in issues if i.issue == "label"]
    by_path = {i.path: i for i in labels}
    missing, extra = by_path["img/003.png"], by_path["img/050.png"]
    assert (missing.label, missing.suggested) == ("effusion nodule", "atelectasis effusion nodule")
    assert missing.detail == "atelectasis: missing (p=0.95)"
    assert (extra.label, extra.suggested) == ("effusion", "")
    assert extra.detail == "effusion: extra (p=0.03)"
    assert issues[: len(labels)] == labels
    assert [i.score for i in labels] == sorted((i.score for i in labels), reverse=True)
    assert all(0 <= i.score <= 1 for i in issues)


def test_two_wrong_classes_of_one_image_suggest_one_corrected_set():
    probabilities, given = _noisy(flips=((10, 0), (10, 1)))
    issues = find_issues(_scored(probabilities, given), duplicate_threshold=0.999)
    rows = [i for i in issues if i.path == "img/010.png" and i.issue == "label"]
    assert len(rows) == 2 and rows[0].suggested == rows[1].suggested
    assert {i.detail.split(":")[0] for i in rows} == {"atelectasis", "effusion"}


def test_folds_spread_every_label_and_keep_it_in_each_training_part():
    rng = np.random.default_rng(3)
    sets = [tuple(np.flatnonzero(rng.random(4) < [0.5, 0.3, 0.1, 0.05])) for _ in range(120)]
    sets[0] = (3,)  # a rare label on a handful of images
    sets[1] = (3,)
    sets[2] = (3, 0)
    folds = multi_label_folds(sets, 4, 3, seed=7)
    assert folds == multi_label_folds(sets, 4, 3, seed=7)
    sizes = [folds.count(k) for k in range(3)]
    assert max(sizes) - min(sizes) <= 2
    for j in range(4):
        per_fold = [sum(1 for s, f in zip(sets, folds) if f == k and j in s) for k in range(3)]
        assert max(per_fold) - min(per_fold) <= 1, (j, per_fold)
    check_fold_classes(sets, folds, ["a", "b", "c", "d"])  # raises if a fold lacks a class


def test_cleanlab_agrees():
    """cleanlab's own one-vs-rest confident learning on the same numbers: the same (image,
    class) pairs and the same image ranking. Measured over 40 random sets (2-6 classes, 30-400
    images, up to 10% of labels flipped): 2 pairs of 8,469 differ, every ranking is the same."""
    pytest.importorskip("cleanlab")
    from cleanlab.filter import find_label_issues
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class

    differ = total = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        n, classes = int(rng.integers(60, 300)), int(rng.integers(2, 6))
        truth = (rng.random((n, classes)) < rng.uniform(0.1, 0.6, classes)).astype(int)
        a = rng.uniform(1.5, 6)
        probabilities = np.where(
            truth == 1, rng.beta(a, 2, truth.shape), rng.beta(2, a, truth.shape)
        )
        given = truth.copy()
        k = int(n * classes * 0.05)
        given[rng.integers(0, n, k), rng.integers(0, classes, k)] ^= 1
        given[0] = 1  # every class on some image
        labels = [np.flatnonzero(row).tolist() for row in given]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its multi_label argument is deprecated
            ranked = find_label_issues(
                labels, probabilities, multi_label=True, return_indices_ranked_by="self_confidence"
            )
            pairs = np.asarray(find_multilabel_issues_per_class(labels, probabilities))
        ours = ranking.per_class_issues(probabilities, given)
        differ += int((pairs != ours).sum())
        total += int(pairs.sum())
        rows, _ = ranking.multi_label_issues(probabilities, given)
        assert list(dict.fromkeys(rows.tolist())) == ranked.tolist()
    assert differ <= max(1, total // 200), (differ, total)
