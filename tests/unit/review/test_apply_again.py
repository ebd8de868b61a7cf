"""--apply on a label file, written to be read by people: a one-hot header padded after its
commas is matched as the label reader reads it, and a second --apply onto the corrected copy an
earlier one wrote is refused (it would be rebuilt from the original, losing that apply's edits,
and its --undo would delete the earlier one's copy)."""

import json
import os

import pytest
from helpers import run_cli

from cnnclf.errors import DataError
from cnnclf.review import apply

CLASSES = ["left", "right", "top"]


def _review(tmp_path, train_dir, multi_label=True):
    folder = tmp_path / "review"
    folder.mkdir()
    plan = {"train_dir": str(train_dir), "test_dir": None, "class_names": CLASSES}
    if multi_label:
        plan["multi_label"] = True
    (folder / "review.json").write_text(json.dumps(plan))
    return folder


def _decisions(folder, name, *rows):
    file = folder / name
    file.write_text("path,action,label\n" + "".join(f"{','.join(r)}\n" for r in rows))
    return file


def test_a_one_hot_header_with_spaces_after_the_commas(tmp_path):
    text = "path, left, right, top\na.png,1,0,0\nb.png,0,1,1\n"
    (tmp_path / "train.csv").write_text(text)
    decided = apply.parse_decisions(
        f"path,action,label\n{tmp_path / 'a.png'},relabel,left top\n", "d.csv", CLASSES
    )
    review = {"train_dir": str(tmp_path / "train.csv"), "test_dir": None, "multi_label": True}
    result = apply.plan(decided, {**review, "class_names": CLASSES})
    copy = result.copies[str(tmp_path / "train.reviewed.csv")].decode()
    # The file's own header text; the untouched row as it was; the relabelled one its new set.
    assert copy == "path, left, right, top\na.png,1,0,1\nb.png,0,1,1\n"


def test_a_second_apply_onto_the_same_copy_is_refused(tmp_path):
    (tmp_path / "train.csv").write_text("path,labels\na.png,left\nb.png,right\nc.png,top\n")
    folder = _review(tmp_path, tmp_path / "train.csv")
    copy = tmp_path / "train.reviewed.csv"
    first = _decisions(folder, "first.csv", (str(tmp_path / "a.png"), "relabel", "top"))
    second = _decisions(folder, "second.csv", (str(tmp_path / "b.png"), "remove", ""))
    applied = run_cli("review", "--apply", first)
    assert applied.exit_code == 0, applied.output
    after_first = copy.read_bytes()
    log = apply.log_path(folder, first)

    again = run_cli("review", "--apply", second)
    assert again.exit_code == 2
    assert again.stderr.strip().splitlines() == [
        f"error: {copy} exists from an earlier --apply ({log}); undo that first with "
        f"cnnclf review --undo {log}, or move the file away"
    ]
    assert copy.read_bytes() == after_first  # nothing written: the first apply's edit stays
    assert sorted(p.name for p in (folder / "applied").iterdir()) == [log.name]

    # Undo of the one apply still works; then the second applies onto a fresh copy.
    assert run_cli("review", "--undo", log).exit_code == 0
    assert not copy.exists()
    assert run_cli("review", "--apply", second).exit_code == 0
    assert copy.read_text() == "path,labels\na.png,left\nc.png,top\n"


def test_a_copy_no_log_of_this_review_wrote_is_not_overwritten(tmp_path):
    (tmp_path / "train.csv").write_text("path,labels\na.png,left\n")
    folder = _review(tmp_path, tmp_path / "train.csv")
    (tmp_path / "train.reviewed.csv").write_text("mine")
    decisions = _decisions(folder, "d.csv", (str(tmp_path / "a.png"), "remove", ""))
    chosen = apply.read_decisions(decisions, CLASSES)
    the_plan = apply.plan(chosen, json.loads((folder / "review.json").read_text()))
    with pytest.raises(DataError, match=r"train.reviewed.csv exists, and no undo log of this"):
        apply.apply(folder, decisions, the_plan)
    assert (tmp_path / "train.reviewed.csv").read_text() == "mine"
    assert not (folder / "applied").exists()


def test_folders_take_a_second_apply(tmp_path):
    root = tmp_path / "data"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        (root / name / f"{name}.png").write_bytes(name.encode())
    folder = _review(tmp_path, root, multi_label=False)
    first = _decisions(folder, "first.csv", (str(root / "left" / "left.png"), "relabel", "top"))
    second = _decisions(folder, "second.csv", (str(root / "right" / "right.png"), "remove", ""))
    assert run_cli("review", "--apply", first).exit_code == 0
    assert run_cli("review", "--apply", second).exit_code == 0
    assert sorted(os.listdir(root / "top")) == ["left.png", "top.png"]
    assert (tmp_path / "_removed" / "data" / "right" / "right.png").exists()
