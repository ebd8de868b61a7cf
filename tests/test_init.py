"""`cnnclf init` through the CLI: a config that validates and trains as written."""

import pytest
from helpers import make_tree, run_cli


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNCLF_OFFLINE", "1")  # never probe or download weights
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # an empty weights cache


def test_init_writes_a_commented_config_that_validates(tmp_path):
    tree = make_tree(tmp_path / "data")
    out = tmp_path / "cfg" / "init.yaml"
    result = run_cli("init", tree, "--out", out)
    assert result.exit_code == 0, result.output
    assert "2 classes, 24 training images" in result.output
    text = out.read_text()
    keys = [line for line in text.splitlines() if line.startswith("  ")]
    assert keys and all("  # " in line for line in keys)  # every choice says why
    assert "CNNCLF_OFFLINE is set" in text or "from scratch" in text
    checked = run_cli("config", "--config", out)
    assert checked.exit_code == 0, checked.output


def test_init_refuses_to_overwrite_without_the_flag(tmp_path):
    tree = make_tree(tmp_path / "data")
    out = tmp_path / "init.yaml"
    out.write_text("mine\n")
    result = run_cli("init", tree, "--out", out)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"error: --out: {out} exists; choose another file or add --overwrite"
    )
    assert out.read_text() == "mine\n"
    assert run_cli("init", tree, "--out", out, "--overwrite").exit_code == 0


def test_init_without_out_prints_the_config(tmp_path):
    tree = make_tree(tmp_path / "data", with_test=False)
    result = run_cli("init", tree / "training_set")
    assert result.exit_code == 0, result.output
    assert "validation_split: 0.2" in result.output


def test_init_on_a_missing_folder_is_one_line(tmp_path):
    result = run_cli("init", tmp_path / "nothing")
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "no such folder" in result.output


@pytest.mark.slow
def test_the_config_init_writes_trains_as_is(tmp_path):
    tree = make_tree(tmp_path / "data")
    out = tmp_path / "init.yaml"
    assert run_cli("init", tree, "--out", out).exit_code == 0
    result = run_cli(
        "train", "--config", out, "--out", tmp_path / "bundle", "--set", "train.epochs=1"
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bundle" / "bundle.json").is_file()
