"""Every bad input a real folder holds, through check-data, train and predict.

Each case asserts the exit code, that the message names the file, and that no traceback shows.
"""

import json
import shutil

import pytest
from helpers import (
    IGNORED,
    ODD_BUT_READABLE,
    UNREADABLE,
    make_tree,
    run_cli,
    write_bad_case,
    write_config,
)

EXPECTED_KIND = {
    "truncated_jpeg": "unreadable",
    "text_as_jpeg": "unreadable",
    "empty_file": "unreadable",
    "decompression_bomb": "unreadable",
    "png_named_jpg": "format_mismatch",
    "cmyk_jpeg": "cmyk",
    "rgba_png": "transparency",
    "sixteen_bit_png": "sixteen_bit",
    "palette_gif": "transparency",
    "exif_rotated": "exif_rotated",
    "tiny_image": "too_small",
    "thumbs_db": "not_an_image",
}


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "data", n_train=6, n_test=3)


def no_traceback(result):
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", UNREADABLE + ODD_BUT_READABLE + IGNORED)
def test_check_data_reports_each_case(tree, case):
    path = write_bad_case(case, tree / "training_set" / "vstripes")
    result = run_cli("check-data", "--format", "json", "--image-size", "16", "16", tree)
    assert result.exit_code == 0, result.output  # nothing here stops training
    no_traceback(result)
    report = json.loads(result.stdout)
    kinds = {p["kind"] for p in report["problems"] if p["path"] == str(path)}
    if case in ("ds_store", "appledouble"):
        assert not kinds  # dot-files are not even listed: macOS litter
    else:
        assert EXPECTED_KIND[case] in kinds
    if case in UNREADABLE:
        problem = next(p for p in report["problems"] if p["path"] == str(path))
        assert problem["severity"] == "error" and "training skips it" in problem["advice"]


def test_check_data_finds_duplicates_leakage_and_imbalance(tmp_path, tree):
    train, test = tree / "training_set" / "hstripes", tree / "test_set" / "hstripes"
    first = sorted(train.iterdir())[0]
    shutil.copy(first, train / "copy_of_first.jpg")
    shutil.copy(first, test / "leaked.jpg")
    for extra in sorted((tree / "training_set" / "vstripes").iterdir())[:3]:
        extra.unlink()
    result = run_cli("check-data", "--format", "json", tree)
    report = json.loads(result.stdout)
    assert report["splits"]["training_set"] == {"hstripes": 7, "vstripes": 3}
    assert report["imbalance_ratio"]["training_set"] == pytest.approx(7 / 3)
    assert report["leaked_images"] == 1
    duplicates = [p for p in report["problems"] if p["kind"] == "duplicate"]
    assert len(duplicates) == 1  # the copy sorted first is kept, the other flagged
    assert duplicates[0]["path"] in {str(first), str(train / "copy_of_first.jpg")}
    assert any("train.class_weight: balanced" in s for s in report["suggestions"])
    fixed = run_cli("check-data", tree, "--fix-to", tmp_path / "clean")
    assert fixed.exit_code == 0
    again = json.loads(run_cli("check-data", "--format", "json", tmp_path / "clean").stdout)
    assert again["leaked_images"] == 0 and again["problem_counts"] == {}


@pytest.mark.parametrize(
    "target", ["training_set/clean", "clean", "test_set/hstripes/x/y", "link/clean", "config"]
)
def test_fix_to_inside_the_data_is_refused_before_anything_is_read(tmp_path, tree, target):
    """A copy inside a split became a new class (training_set/clean) for the next run."""
    args = ["check-data", tree]
    inside = tree
    if target.startswith("link"):
        (tmp_path / "link").symlink_to(tree / "training_set")  # resolves into the data
        fix_to = tmp_path / target
    elif target == "config":
        config = write_config(tmp_path / "c.yaml", tree)
        args = ["check-data", "--config", config]
        inside = tree / "training_set"
        fix_to = tree / "training_set" / "clean"
    else:
        fix_to = tree / target
    result = run_cli(*args, "--fix-to", fix_to)
    assert result.exit_code == 2, result.output
    no_traceback(result)
    assert result.stderr.splitlines() == [
        f"error: --fix-to {fix_to}: is inside the data being checked ({inside}), where the "
        "copy would be read as more data; choose a folder outside it"
    ]
    assert result.stdout == "" and not fix_to.exists()


@pytest.mark.parametrize("case", ["single_class", "empty_class", "class_mismatch"])
def test_check_data_exits_non_zero_for_what_stops_training(tree, case):
    if case == "single_class":
        shutil.rmtree(tree / "training_set" / "vstripes")
        shutil.rmtree(tree / "test_set" / "vstripes")
    elif case == "empty_class":
        for p in (tree / "training_set" / "vstripes").iterdir():
            p.unlink()
    else:
        (tree / "test_set" / "vstripes").rename(tree / "test_set" / "zebra")
    result = run_cli("check-data", tree)
    assert result.exit_code == 2  # as train's for the same layout: a data-layout error
    assert "fatal:" in result.stdout
    no_traceback(result)


@pytest.mark.slow
@pytest.mark.parametrize("case", UNREADABLE + ODD_BUT_READABLE + IGNORED)
def test_training_survives_each_case(tmp_path, tree, case):
    path = write_bad_case(case, tree / "training_set" / "hstripes")
    config = write_config(tmp_path / "c.yaml", tree)
    result = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    no_traceback(result)
    skipped = json.loads((tmp_path / "b" / "bundle.json").read_text())["skipped_files"]
    if case in UNREADABLE:
        assert [s["path"] for s in skipped] == [str(path)]
        assert "skipped 1 unreadable image" in result.stderr and str(path) in result.stderr
    else:
        assert skipped == []


@pytest.mark.slow
@pytest.mark.parametrize("case", UNREADABLE + ODD_BUT_READABLE)
def test_predict_reports_bad_files_and_predicts_the_rest(
    tmp_path, binary_bundle, binary_tree, case
):
    path = write_bad_case(case, tmp_path / "inbox")
    good = sorted((binary_tree / "test_set" / "vstripes").iterdir())[0]
    result = run_cli("predict", "--model", binary_bundle, "--format", "json", path, good)
    no_traceback(result)
    rows = json.loads(result.stdout)
    if case in UNREADABLE:
        assert result.exit_code == 1
        assert [r["path"] for r in rows] == [str(good)]
        assert f"error: {path}: " in result.stderr
    else:
        assert result.exit_code == 0, result.output
        assert [r["path"] for r in rows] == [str(path), str(good)]
