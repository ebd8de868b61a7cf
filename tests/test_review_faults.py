"""`cnnclf review --apply` killed (SIGKILL) at each of its fault points, then undone and
applied again: no file lost or duplicated, every file the undo log lists at exactly one of its
two places, and `--undo` restoring the tree byte for byte (cnnclf/review/apply.py states the
invariant). No model is trained: the review folder is made by hand."""

import csv
import hashlib
import json
import os
import signal
import sys

import pytest
from helpers import make_tree, run_cli, run_process

pytestmark = pytest.mark.slow  # kills subprocesses

# Where the apply is killed; the decisions make 3 moves and 1 corrected copy of test.csv.
KILLS = [
    "apply.logged",  # nothing moved yet
    "apply.moved@1",  # the first file moved
    "apply.moved@2",
    "apply.copy_written",  # every move and the copy made; the log still PLANNED
    "apply.done",  # the log DONE
]


def _tree(work):
    """Class folders for training, a label file for test; a review folder; decisions.csv."""
    root = make_tree(work / "data", n_classes=3, n_train=4, n_test=2)
    test = root / "test_set"
    with open(root / "test.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for image in sorted(test.glob("*/*")):
            writer.writerow([str(image.relative_to(root)), image.parent.name])
    review = work / "review"
    review.mkdir()
    plan = {"train_dir": str(root / "training_set"), "test_dir": str(root / "test.csv")}
    plan["class_names"] = ["checker", "hstripes", "vstripes"]
    (review / "review.json").write_text(json.dumps(plan))
    train = root / "training_set"
    rows = [
        (train / "hstripes" / "hstripes_000.jpg", "relabel", "vstripes"),
        (train / "vstripes" / "vstripes_001.png", "relabel", "checker"),
        (train / "checker" / "checker_002.bmp", "remove", ""),
        (sorted(test.glob("hstripes/*"))[0], "relabel", "checker"),
    ]
    with open(review / "decisions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "action", "label"])
        writer.writerows((str(p.resolve()), a, label) for p, a, label in rows)
    return root, review


def _contents(root):
    """Every file under root: relative path -> digest (empty folders do not count)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _apply_killed(review, point):
    command = [sys.executable, "-m", "cnnclf.cli", "review", "--apply"]
    command += [str(review / "decisions.csv")]
    env = {**os.environ, "CNNCLF_FAULT": f"{point}=kill"}
    return run_process(command, f"an --apply killed at {point}", env=env)


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The tree's files before and after an uninterrupted apply (make_tree is deterministic)."""
    root, review = _tree(tmp_path_factory.mktemp("expected"))
    before = _contents(root)
    applied = run_cli("review", "--apply", review / "decisions.csv")
    assert applied.exit_code == 0, applied.output
    return before, _contents(root)


@pytest.mark.parametrize("point", KILLS)
def test_a_killed_apply_is_undone_and_applied_again(expected, tmp_path, point):
    before, after = expected
    root, review = _tree(tmp_path)
    process = _apply_killed(review, point)
    assert process.returncode == -signal.SIGKILL, process.stderr

    log = next((review / "applied").glob("*.json"))
    record = json.loads(log.read_text())
    assert record["state"] == ("done" if point == "apply.done" else "planned")
    for old, new in record["moves"]:  # each file at exactly one of its places
        assert os.path.exists(old) != os.path.exists(new), (old, new)
    digests = sorted(_contents(root).values())
    copy = root / "test.reviewed.csv"
    if copy.exists():  # the corrected copy is whole; it is the only file added
        digest = hashlib.sha256(copy.read_bytes()).hexdigest()
        assert digest == after["test.reviewed.csv"]
        digests.remove(digest)
    assert digests == sorted(before.values())  # nothing lost, nothing duplicated

    again = run_cli("review", "--apply", review / "decisions.csv")
    assert again.exit_code == 2 and "already applied" in again.output, again.output
    undone = run_cli("review", "--undo", log)
    assert undone.exit_code == 0, undone.output
    assert _contents(root) == before
    reapplied = run_cli("review", "--apply", review / "decisions.csv")
    assert reapplied.exit_code == 0, reapplied.output
    assert _contents(root) == after


def test_a_killed_undo_finishes_when_run_again(expected, tmp_path):
    before, _ = expected
    root, review = _tree(tmp_path)
    assert run_cli("review", "--apply", review / "decisions.csv").exit_code == 0
    log = next((review / "applied").glob("*.json"))
    command = [sys.executable, "-m", "cnnclf.cli", "review", "--undo", str(log)]
    env = {**os.environ, "CNNCLF_FAULT": "undo.moved@2=kill"}
    process = run_process(command, "an --undo killed after two moves", env=env)
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert log.exists()
    undone = run_cli("review", "--undo", log)
    assert undone.exit_code == 0, undone.output
    assert _contents(root) == before
