"""The review folder's plan (review.json) and the issue list's de-duplication: pure parts."""

import json
from types import SimpleNamespace

import pytest

from cnnclf.cli.review import DUPLICATE_DEFAULT
from cnnclf.errors import ConfigError
from cnnclf.review import neighbours
from cnnclf.review.issues import Issue
from cnnclf.review.run import PLAN_FILE, _once, _write_plan


def test_the_cli_default_is_the_rooms_threshold():
    assert DUPLICATE_DEFAULT == neighbours.DUPLICATE_SIMILARITY


def _plan(folder, repeats=1, folds=3, seed=7):
    config = SimpleNamespace(
        data=SimpleNamespace(train_dir="/d/train", test_dir=None), train=SimpleNamespace(seed=seed)
    )
    data = SimpleNamespace(class_names=["a", "b"], paths=["x", "y"], multi_label=False)
    _write_plan(folder, config, data, folds, repeats)  # type: ignore[arg-type]
    return json.loads((folder / PLAN_FILE).read_text())


def test_another_repeats_extends_the_review_in_place(tmp_path):
    assert "repeats" not in _plan(tmp_path)
    assert _plan(tmp_path, repeats=3)["repeats"] == 3  # 1 -> 3: the first draw is reused
    assert "repeats" not in _plan(tmp_path, repeats=1)  # 3 -> 1 (was: "unreadable ... differ")


def test_other_settings_are_still_refused_naming_them(tmp_path):
    _plan(tmp_path, repeats=2)
    with pytest.raises(ConfigError, match=r"\(folds, repeats differ\)"):
        _plan(tmp_path, repeats=1, folds=5)
    (tmp_path / PLAN_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be read"):
        _plan(tmp_path)


def test_an_unreadable_image_is_listed_once():
    models = Issue("/d/a.png", "", "", 1.0, "unreadable", "", "cannot identify image file")
    check = Issue("/d/a.png", "", "", 1.0, "unreadable", "train", "truncated")
    pair = [
        Issue("/d/b.png", "a", "", 1.0, "near_duplicate", "train", "a copy of /d/c.png"),
        Issue("/d/b.png", "a", "", 1.0, "near_duplicate", "train", "a copy of /d/e.png"),
    ]
    assert _once([models, *pair, check]) == [models, *pair]


def test_the_table_shows_an_empty_suggested_set(capsys):
    from cnnclf.cli.review import _table

    row = {
        "issue": "label",
        "score": 0.59,
        "label": "left",
        "suggested": "",
        "path": "/d/a.png",
        "detail": "",
    }
    _table([row, {**row, "issue": "ambiguous", "detail": ""}])
    lines = capsys.readouterr().out.splitlines()
    assert "left -> (no label)  /d/a.png" in lines[1]
    assert "->" not in lines[2]  # other kinds suggest nothing
