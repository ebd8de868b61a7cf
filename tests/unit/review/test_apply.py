"""--apply on label files of every form: the corrected copy keeps the file's own form."""

import json
import os

import pytest

from cnnclf.errors import DataError
from cnnclf.review import apply


def _plan(tmp_path, name, text, *decided):
    """Plans `decided` (path, action, label) against the label file `name` holding `text`."""
    file = tmp_path / name
    file.write_text(text)
    decisions = [
        apply.Decision(f"decisions.csv: row {n}", os.path.abspath(tmp_path / path), action, label)
        for n, (path, action, label) in enumerate(decided, start=1)
    ]
    result = apply.plan(decisions, {"train_dir": str(file), "test_dir": None})
    return result.copies[str(tmp_path / name.replace(".", ".reviewed."))].decode()


def test_a_labels_column(tmp_path):
    text = "path,labels\na.png,cat\nb.png,dog\nc.png,dog\n"
    copy = _plan(tmp_path, "train.csv", text, ("a.png", "relabel", "dog"), ("b.png", "remove", ""))
    assert copy == "path,labels\na.png,dog\nc.png,dog\n"


def test_one_column_per_class(tmp_path):
    text = "path,cat,dog\na.png,1,0\nb.png,0,1\n"
    copy = _plan(tmp_path, "train.csv", text, ("a.png", "relabel", "dog"))
    assert copy == "path,cat,dog\na.png,0,1\nb.png,0,1\n"


def test_json_lines_with_label_and_labels(tmp_path):
    text = (
        '{"path": "a.png", "labels": ["cat"]}\n'
        '{"path": "b.png", "label": "cat"}\n'
        '{"path": "c.png", "label": "dog"}\n'
    )
    decided = [("a.png", "relabel", "dog"), ("b.png", "relabel", "dog"), ("c.png", "remove", "")]
    copy = _plan(tmp_path, "train.jsonl", text, *decided)
    records = [json.loads(line) for line in copy.splitlines()]
    assert records == [{"path": "a.png", "labels": ["dog"]}, {"path": "b.png", "label": "dog"}]


def test_relabelling_a_row_with_several_labels_is_refused(tmp_path):
    text = "path,labels\na.png,cat dog\nb.png,dog\n"
    with pytest.raises(DataError, match=r"row 1 gives .*a.png several labels \(cat dog\)"):
        _plan(tmp_path, "train.csv", text, ("a.png", "relabel", "cat"))
    # Removing it is fine: nothing about its labels has to be guessed.
    assert _plan(tmp_path, "train.csv", text, ("a.png", "remove", "")) == "path,labels\nb.png,dog\n"


def test_two_rows_for_one_image_are_refused_before_anything_moves(tmp_path):
    image = tmp_path / "data" / "dog" / "a.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"png")
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(f"path,action,label\n{image},relabel,cat\n{image},remove,\n")
    with pytest.raises(DataError) as info:
        apply.read_decisions(decisions, ["cat", "dog"])
    assert str(info.value) == (
        f"{decisions}: row 2: {image} is decided on row 1 already; keep one row per image"
    )
    assert image.exists()


def test_a_move_that_fails_midway_is_one_line_and_undone_by_the_log(tmp_path):
    root = tmp_path / "data"
    for name in ("a", "b"):
        (root / "dog").mkdir(parents=True, exist_ok=True)
        (root / "dog" / f"{name}.png").write_bytes(name.encode())
    moves = [
        (str(root / "dog" / "a.png"), str(root / "cat" / "a.png")),
        (str(root / "dog" / "gone.png"), str(root / "cat" / "gone.png")),  # vanished meanwhile
    ]
    plan = apply.Plan(moves=moves, copies={})
    review = tmp_path / "review"
    review.mkdir()
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("path,action,label\n")
    with pytest.raises(DataError) as info:
        apply.apply(review, decisions, plan)
    message = str(info.value)
    assert "moving" in message and "after 1 of 2 moves; undo them with --undo" in message
    log = apply.log_path(review, decisions)
    assert json.loads(log.read_text())["state"] == "planned"
    assert (root / "cat" / "a.png").exists()
    # A log of a stopped apply: undo takes back what moved, and passes over the vanished file.
    assert apply.undo(log) == [f"move {root / 'cat' / 'a.png'} -> {root / 'dog' / 'a.png'}"]
    assert (root / "dog" / "a.png").read_bytes() == b"a"
