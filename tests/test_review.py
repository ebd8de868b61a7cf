"""`cnnclf review` through the CLI on a tiny made-by-code set with known flipped labels, and
`--apply` with its undo log, dry run and refusal to apply twice."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tree, run_cli, write_config
from PIL import Image

pytestmark = pytest.mark.slow  # trains 3 fold models

# (class folder, file, the class folder it is wrongly filed in)
FLIPS = [
    ("hstripes", "hstripes_002.bmp", "vstripes"),
    ("vstripes", "vstripes_005.png", "checker"),
    ("checker", "checker_010.bmp", "hstripes"),
]
# (a training image, its copy in the test split): re-encoded, resized, brightened.
COPIES = [
    ("hstripes/hstripes_005.png", "hstripes/reencoded_005.jpg"),
    ("checker/checker_007.gif", "checker/resized_007.png"),
    ("vstripes/vstripes_003.gif", "vstripes/brighter_003.png"),
]


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    """A 3-class set with three labels flipped, reviewed with 3 folds."""
    work = tmp_path_factory.mktemp("review")
    root = make_tree(work / "data", n_classes=3, n_train=20, with_test=False)
    train = root / "training_set"
    for source, name, wrong in FLIPS:
        shutil.move(train / source / name, train / wrong / name)
    test = root / "test_set"
    for original, copy in COPIES:  # near duplicates that exact hashes miss, in the test split
        image = Image.open(train / original).convert("RGB")
        (test / copy).parent.mkdir(parents=True, exist_ok=True)
        if copy.endswith(".jpg"):
            image.save(test / copy, quality=70)
        elif "resized" in copy:
            image.resize((image.width * 3 // 2, image.height * 3 // 2)).save(test / copy)
        else:
            image.point(lambda v: min(255, int(v * 0.8) + 30)).save(test / copy)
    config = write_config(
        work / "review.yaml",
        root,
        data={
            "train_dir": str(train),
            "test_dir": str(root / "test_set"),
            "image_size": [16, 16],
            "batch_size": 8,
        },
        augment={"rescale": "1/255"},
        model={
            "conv_blocks": [{"filters": 8, "kernel_size": 3, "pool_size": 2}],
            "dense_units": [16],
        },
        train={"epochs": 6, "seed": 7, "learning_rate": 0.01},
    )
    out = work / "out"
    result = run_cli("review", "--config", config, "--folds", 3, "--out", out, "--format", "json")
    assert result.exit_code == 0, result.output
    return work, config, out, train


def test_flipped_labels_rank_first(reviewed):
    _, _, out, train = reviewed
    issues = json.loads((out / "issues.json").read_text())
    labels = [i for i in issues if i["issue"] == "label"]
    assert issues[: len(labels)] == labels  # label issues first, in rank order
    flipped = {str((train / wrong / name).resolve()) for _, name, wrong in FLIPS}
    assert {i["path"] for i in labels[:3]} == flipped
    by_path = {i["path"]: i for i in labels}
    for source, name, wrong in FLIPS:
        assert by_path[str((train / wrong / name).resolve())]["suggested"] == source
    for name in ("issues.csv", "oof_probabilities.npy", "oof_probabilities.csv", "index.html"):
        assert (out / name).is_file()
    # The held-out labels judged did not fit a temperature (train.calibrate defaults to on).
    for k in (1, 2, 3):
        record = json.loads((out / "folds" / f"fold-{k}" / "bundle.json").read_text())
        assert record.get("calibration") is None


def test_copies_across_splits_are_near_duplicates(reviewed):
    _, _, out, train = reviewed
    issues = json.loads((out / "issues.json").read_text())
    found = {
        (Path(i["detail"].split(" (")[0].removeprefix("a copy of ")), Path(i["path"]))
        for i in issues
        if i["issue"] == "near_duplicate"
    }
    test = train.parent / "test_set"
    for original, copy in COPIES:
        assert ((train / original).resolve(), (test / copy).resolve()) in found
    # The fixture's stripes are one pattern per class, rescaled, with 10% noise: some of its
    # same-class pairs are copies by any pixel measure, but far fewer than before the pixel
    # check (44 of 60 images then).
    assert len(found) <= 25


def test_a_second_run_reuses_the_folds(reviewed):
    _, config, out, _ = reviewed
    result = run_cli("review", "--config", config, "--folds", 3, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.count("reusing the fold's bundle") == 3


def test_repeats_average_a_second_draw_of_the_folds(reviewed, tmp_path):
    _, config, out, train = reviewed
    again = tmp_path / "again"
    shutil.copytree(out, again)  # a finished one-draw review: --repeats 2 extends it in place
    result = run_cli(
        "review", "--config", config, "--folds", 3, "--repeats", 2, "--out", again,
        "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "repeats 2 (was 1)" in result.stderr
    assert result.stderr.count("reusing the fold's bundle") == 3
    assert "fold 3 of 3 (repeat 2 of 2)" in result.stderr
    rows = json.loads(result.stdout)  # the issues alone: Keras' epoch lines went to stderr
    assert rows and "Epoch 1/" in result.stderr
    second_draw = again / "folds-repeat-2"
    assert all((second_draw / f"fold-{k}" / "bundle.json").is_file() for k in (1, 2, 3))
    assert json.loads((again / "review.json").read_text())["repeats"] == 2
    one = np.load(out / "oof_probabilities.npy")
    two = np.load(again / "oof_probabilities.npy")
    second = 2 * two - one  # the second draw's own held-out predictions
    assert one.shape == two.shape and not np.allclose(one, two)
    assert np.allclose(second.sum(axis=1), 1, atol=1e-3) and (second > -1e-3).all()
    labels = [i for i in json.loads((again / "issues.json").read_text()) if i["issue"] == "label"]
    flipped = {str((train / wrong / name).resolve()) for _, name, wrong in FLIPS}
    assert {i["path"] for i in labels[:3]} == flipped


def test_apply_dry_run_refusal_and_undo(reviewed):
    work, _, out, train = reviewed
    issues = json.loads((out / "issues.json").read_text())
    top = [i for i in issues if i["issue"] == "label"][:3]
    decisions = out / "decisions.csv"
    with open(decisions, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "action", "label"])
        writer.writerows([(i["path"], "relabel", i["suggested"]) for i in top[:2]])
        writer.writerow([top[2]["path"], "remove", ""])
    before = sorted(str(p.relative_to(work)) for p in work.joinpath("data").rglob("*.*"))

    dry = run_cli("review", "--apply", decisions, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output.count("would ") == 3 and "nothing changed" in dry.output
    assert sorted(str(p.relative_to(work)) for p in work.joinpath("data").rglob("*.*")) == before

    applied = run_cli("review", "--apply", decisions)
    assert applied.exit_code == 0, applied.output
    for i in top[:2]:
        assert (train / i["suggested"] / Path(i["path"]).name).is_file()
    assert (
        train.parent / "_removed" / "training_set" / top[2]["label"] / Path(top[2]["path"]).name
    ).is_file()
    log = next((out / "applied").glob("*.json"))
    assert json.loads(log.read_text())["state"] == "done"

    again = run_cli("review", "--apply", decisions)
    assert again.exit_code == 2
    assert "already applied" in again.output and len(again.output.strip().splitlines()) == 1

    undone = run_cli("review", "--undo", log)
    assert undone.exit_code == 0, undone.output
    assert sorted(str(p.relative_to(work)) for p in work.joinpath("data").rglob("*.*")) == before


def test_a_bad_decision_row_is_one_line(reviewed):
    work, _, out, train = reviewed
    bad = out / "bad.csv"
    some = next(train.glob("hstripes/*"))
    cases = [
        ((str(some), "relabel", "zebra"), "row 1: 'zebra' is not a class"),
        ((str(work / "elsewhere.png"), "remove", ""), "is not an image of this review"),
        ((str(train / "hstripes" / "gone.png"), "remove", ""), "does not exist"),
    ]
    for row, message in cases:
        bad.write_text("path,action,label\n" + ",".join(row) + "\n")
        result = run_cli("review", "--apply", bad)
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_a_fold_interrupted_before_folds_stopped_calibrating_resumes_on_one_scale(
    reviewed, tmp_path
):
    """A review killed in its first fold by a cnnclf that still fitted fold temperatures
    resumes (not refused for train.calibrate), and that fold's temperature is taken back out of
    its out-of-fold rows, as the folds trained since never had one."""
    import os
    import signal
    import sys

    from helpers import run_process

    from cnnclf.bundle import load_bundle
    from cnnclf.inference.predict import score_paths
    from cnnclf.model.calibration import uncalibrated
    from cnnclf.tf_loader import import_tensorflow

    _, config, _, _ = reviewed
    out = tmp_path / "older"
    command = [sys.executable, "-m", "cnnclf", "review", "--config", str(config)]
    command += ["--folds", "2", "--out", str(out)]  # 30 held out a fold: enough to calibrate
    env = {**os.environ, "CNNCLF_FAULT": "checkpoint.committed@2=kill"}
    killed = run_process(command, "the killed review", env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    progress_file = out / "folds" / ".fold-1.partial" / "progress.json"
    progress = json.loads(progress_file.read_text())
    assert progress["config"]["train"]["calibrate"] is False
    progress["config"]["train"]["calibrate"] = True  # as cnnclf before 964bebf started it
    progress_file.write_text(json.dumps(progress))
    result = run_cli("review", "--config", config, "--folds", 2, "--out", out)
    assert result.exit_code == 0, result.output
    assert "resuming the fold's interrupted training" in result.output
    folds = [json.loads((out / "folds" / f"fold-{k}" / "bundle.json").read_text()) for k in (1, 2)]
    temperature = folds[0]["calibration"]["temperature"]
    assert temperature > 0 and temperature != 1.0 and folds[1]["calibration"] is None
    with open(out / "folds" / "fold-1-heldout.csv", encoding="utf-8") as f:
        held_out = [row["path"] for row in csv.DictReader(f)]
    with open(out / "oof_probabilities.csv", encoding="utf-8") as f:
        rows = {row["path"]: row for row in csv.DictReader(f)}
    import_tensorflow(False)
    bundle = load_bundle(out / "folds" / "fold-1")
    for path, output in score_paths(bundle, held_out):
        plain = uncalibrated(np.asarray(output, float), temperature, "categorical")
        got = [float(rows[path][name]) for name in bundle.class_names]
        np.testing.assert_allclose(got, plain, atol=1e-5)
