"""The page's "Relabel all to suggested" knows which cards have a suggestion: in a multi-label
review an empty suggested set is one (remove every label), not the absence of one."""

import re
from types import SimpleNamespace

import numpy as np

from cnnclf.review.gallery import render
from cnnclf.review.issues import Issue


def _page(issues, labels):
    scored = SimpleNamespace(
        class_names=["left", "right"],
        paths=[i.path for i in issues],
        labels=labels,
        splits=["train"] * len(issues),
        probabilities=np.full((len(issues), 2), 0.5),
    )
    return render(scored, issues)


def _card(page, path):
    return re.search(rf"<figure class='card' data-path='{path}'[^>]*>", page).group(0)


def test_an_empty_suggested_set_is_a_suggestion():
    issues = [
        Issue("/d/a.png", "left", "", 0.9, "label", "train", "left: extra (p=0.01)"),
        Issue("/d/b.png", "left", "left right", 0.8, "label", "train", "right: missing"),
        Issue("/d/c.png", "left", "", 0.5, "ambiguous", "train", "left"),
    ]
    page = _page(issues, np.array([[1, 0], [1, 0], [1, 0]]))
    assert "data-has-suggestion" in _card(page, "/d/a.png")
    assert "data-has-suggestion" in _card(page, "/d/b.png")
    assert "data-has-suggestion" not in _card(page, "/d/c.png")
    assert "<option value='relabel:'>relabel to (no label)</option>" in page
    assert 'if ("hasSuggestion" in card.dataset)' in page


def test_a_single_label_card_without_a_suggestion_has_none():
    issues = [
        Issue("/d/a.png", "left", "right", 0.9, "label", "train"),
        Issue("/d/b.png", "left", "", 0.5, "ambiguous", "train"),
    ]
    page = _page(issues, np.array([0, 0]))
    assert "data-has-suggestion" in _card(page, "/d/a.png")
    assert "data-has-suggestion" not in _card(page, "/d/b.png")
