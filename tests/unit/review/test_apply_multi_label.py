"""--apply of a multi-label review: a relabel gives a row its whole new set of classes, written
in the label file's own form; a single-label review still takes one class."""

import json
import os

import pytest

from cnnclf.errors import DataError
from cnnclf.review import apply

CLASSES = ["atelectasis", "effusion", "nodule"]


def _copy(tmp_path, name, text, decisions, multi_label=True):
    """The corrected copy of label file `name` holding `text` after `decisions` (CSV text)."""
    file = tmp_path / name
    file.write_text(text)
    decided = apply.parse_decisions(
        decisions.replace("{d}", str(tmp_path)), "decisions.csv", CLASSES
    )
    review = {"train_dir": str(file), "test_dir": None, "class_names": CLASSES}
    if multi_label:
        review["multi_label"] = True
    result = apply.plan(decided, review)
    return result.copies[str(tmp_path / name.replace(".", ".reviewed."))].decode(), result


def test_a_labels_column_gets_the_new_set(tmp_path):
    text = "path,labels\na.png,effusion\nb.png,atelectasis nodule\nc.png,\nd.png,nodule\n"
    decisions = (
        "path,action,label\n{d}/a.png,relabel,nodule effusion\n{d}/b.png,relabel,\n"
        "{d}/c.png,relabel,atelectasis\n{d}/d.png,remove,\n"
    )
    copy, result = _copy(tmp_path, "train.csv", text, decisions)
    assert copy == "path,labels\na.png,effusion nodule\nb.png,\nc.png,atelectasis\n"
    assert f"decisions.csv: row 2: relabel to no label of {tmp_path / 'b.png'}" in "\n".join(
        result.lines
    )


def test_one_hot_rows_get_a_1_per_class(tmp_path):
    text = "path,atelectasis,effusion,nodule\na.png,1,0,0\nb.png,1,1,0\n"
    decisions = "path,action,label\n{d}/a.png,relabel,atelectasis effusion\n{d}/b.png,relabel,\n"
    copy, _ = _copy(tmp_path, "train.csv", text, decisions)
    assert copy == "path,atelectasis,effusion,nodule\na.png,1,1,0\nb.png,0,0,0\n"


def test_json_lines_label_becomes_labels_when_it_holds_several(tmp_path):
    text = (
        '{"path": "a.png", "label": "effusion"}\n'
        '{"path": "b.png", "labels": ["effusion", "nodule"]}\n'
        '{"path": "c.png", "label": "nodule"}\n'
    )
    decisions = (
        "path,action,label\n{d}/a.png,relabel,effusion nodule\n{d}/b.png,relabel,nodule\n"
        "{d}/c.png,relabel,atelectasis\n"
    )
    copy, _ = _copy(tmp_path, "train.jsonl", text, decisions)
    assert [json.loads(line) for line in copy.splitlines()] == [
        {"path": "a.png", "labels": ["effusion", "nodule"]},
        {"path": "b.png", "labels": ["nodule"]},
        {"path": "c.png", "label": "atelectasis"},
    ]


def test_a_label_column_holds_one_class(tmp_path):
    text = "path,label\na.png,effusion\n"
    decisions = "path,action,label\n{d}/a.png,relabel,effusion nodule\n"
    with pytest.raises(DataError, match=r"row 1: .* row 1 has a label column, which holds one"):
        _copy(tmp_path, "train.csv", text, decisions)


def test_a_set_in_a_single_label_review_is_refused_in_one_line(tmp_path):
    text = "path,label\na.png,effusion\nb.png,nodule\n"
    for cell, count in (("effusion nodule", 2), ("", 0)):
        decisions = f"path,action,label\n{{d}}/a.png,relabel,{cell}\n"
        with pytest.raises(DataError) as info:
            _copy(tmp_path, "train.csv", text, decisions, multi_label=False)
        assert str(info.value) == (
            f"decisions.csv: row 1: relabel to {count} classes ({cell!r}); this review's data "
            "gives each image one class: give one"
        )


def test_a_class_that_is_not_the_reviews_is_named():
    with pytest.raises(DataError) as info:
        apply.parse_decisions("path,action,label\na.png,relabel,effusion zebra\n", "d.csv", CLASSES)
    assert str(info.value) == (
        "d.csv: row 1: 'zebra' (in 'effusion zebra') is not a class of this review "
        "(classes: atelectasis, effusion, nodule)"
    )


def test_sets_are_read_in_class_order_and_a_spaced_name_alone():
    names = ["big dog", "cat", "dog"]
    text = "path,action,label\na.png,relabel,dog cat\nb.png,relabel,big dog\nc.png,relabel,\n"
    decided = apply.parse_decisions(text, "d.csv", names)
    assert [d.classes for d in decided] == [("cat", "dog"), ("big dog",), ()]
    assert decided[0].path == os.path.abspath("a.png")
