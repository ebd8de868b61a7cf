"""Run folders under runs/ (cnnclf/training/runs.py): names, the newest bundle, --out checks."""

import re

import pytest

from cnnclf.errors import BundleError
from cnnclf.training.runs import check_destination, new_run_dir, newest_bundle

STAMP = r"\d{8}-\d{6}"


def test_a_run_is_named_after_its_config_and_the_time(tmp_path):
    run = new_run_dir("configs/cats & dogs.yaml", tmp_path / "runs")
    assert run.is_dir() and run.parent == tmp_path / "runs"
    assert re.fullmatch(rf"cats-dogs-{STAMP}", run.name), run.name


def test_a_run_without_a_config_is_named_run(tmp_path):
    assert re.fullmatch(rf"run-{STAMP}", new_run_dir(None, tmp_path).name)


def test_runs_started_in_the_same_second_get_numbered_names(tmp_path, monkeypatch):
    monkeypatch.setattr("time.strftime", lambda _: "20260101-120000")
    names = [new_run_dir("c.yaml", tmp_path).name for _ in range(3)]
    assert names == ["c-20260101-120000", "c-20260101-120000-2", "c-20260101-120000-3"]


def test_no_runs_folder_or_no_complete_bundle_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match=r"no --model given and no .*runs/ folder here"):
        newest_bundle(tmp_path / "runs")
    (tmp_path / "runs" / "half-done").mkdir(parents=True)
    with pytest.raises(BundleError, match="no complete bundle under"):
        newest_bundle(tmp_path / "runs")


def test_out_must_be_an_empty_folder_unless_overwriting(tmp_path):
    check_destination(tmp_path / "new", overwrite=False)  # not there yet: fine
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty", overwrite=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BundleError, match="folder exists and is not empty"):
        check_destination(tmp_path / "full", overwrite=False)
    check_destination(tmp_path / "full", overwrite=True)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BundleError, match="exists and is not a folder"):
        check_destination(tmp_path / "afile", overwrite=True)
