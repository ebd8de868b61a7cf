"""`cnnclf lr-find` and `train.learning_rate: auto` through the CLI."""

import json

import pytest
from helpers import make_tree, read_json, run_cli, write_config


@pytest.fixture
def config(tmp_path):
    tree = make_tree(tmp_path / "data", n_train=16)
    return write_config(tmp_path / "tiny.yaml", tree)


@pytest.mark.slow
def test_lr_find_prints_a_suggestion_and_draws_the_curve(tmp_path, config):
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "finder"
    result = run_cli("lr-find", "--config", config, "--out", out, "--steps", "60")
    assert result.exit_code == 0, result.output
    assert "suggested" in result.output and "minimum / 10" in result.output
    assert (out / "lr_find.png").stat().st_size > 1000
    found = read_json(out / "lr_find.json")
    assert found["suggested"] == pytest.approx(found["minimum"] / 10)
    assert 1e-7 <= found["valley"] <= found["minimum"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "finder"])  # no run dir


@pytest.mark.slow
def test_lr_find_json(config):
    result = run_cli("lr-find", "--config", config, "--format", "json", "--steps", "40")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output.strip().splitlines()[-1])
    assert found["phase"] == "train" and len(found["rates"]) == found["steps"]


def test_lr_find_refuses_a_bad_steps_count(config):
    result = run_cli("lr-find", "--config", config, "--steps", "1")
    assert result.exit_code == 2
    assert "--steps: must be an integer in [2, 1000], got 1" in result.output


@pytest.mark.slow
def test_a_curve_too_short_to_show_a_decrease_is_one_line(config):
    # Two steps cannot show a decrease: the degenerate "no decrease" case, exit 2.
    result = run_cli("lr-find", "--config", config, "--steps", "2")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: learning_rate: auto / lr-find")


@pytest.mark.slow
def test_learning_rate_auto_trains_at_the_found_rate(tmp_path, config):
    result = run_cli(
        "train", "--config", config, "--out", tmp_path / "bundle",
        "--set", "train.learning_rate=auto",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bundle" / "config.yaml").read_text().count("learning_rate: auto") == 1
    [found] = read_json(tmp_path / "bundle" / "bundle.json")["lr_find"]
    assert found["phase"] == "train" and 1e-7 <= found["suggested"] <= found["minimum"] / 10


@pytest.mark.slow
def test_a_resumed_auto_run_takes_its_rate_from_the_checkpoint(tmp_path, config):
    """Not from a second range test, which another cnnclf (another step count) or machine
    need not answer the same way: the rate the first epochs used is in the checkpoint."""
    import os
    import signal
    import sys

    from helpers import run_process

    out = tmp_path / "bundle"
    options = ["--set", "train.learning_rate=auto", "--set", "train.epochs=4"]
    options += ["--set", "train.lr_schedule=cosine"]  # the schedule reads the base rate
    command = [sys.executable, "-m", "cnnclf", "train", "--config", str(config)]
    command += ["--out", str(out), *options]
    env = {**os.environ, "CNNCLF_FAULT": "checkpoint.committed@2=kill"}
    killed = run_process(command, "the killed run", env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "learning_rate: auto -> " in killed.stderr
    progress_file = tmp_path / ".bundle.partial" / "progress.json"
    progress = json.loads(progress_file.read_text())
    [record] = progress["controls"]["lr_find"]
    record["suggested"] = 0.00123  # a rate no range test here gives
    progress_file.write_text(json.dumps(progress))
    result = run_cli("train", "--config", config, "--out", out, "--resume", *options)
    assert result.exit_code == 0, result.output
    assert "learning_rate: auto -> 0.00123 (found before the interruption)" in result.output
    assert "lr-find:" not in result.output  # no second test
    assert read_json(out / "bundle.json")["lr_find"][0]["suggested"] == 0.00123
    # Epoch 3 of 4 on the cosine from the checkpoint's rate: min + (base - min) * 0.25.
    rates = read_json(out / "history.json")["learning_rate"]
    assert rates[2] == pytest.approx(1e-6 + 0.25 * (0.00123 - 1e-6), rel=1e-4)


@pytest.mark.slow
def test_fine_tune_learning_rate_auto_finds_a_rate_at_the_phase_start(
    tmp_path, binary_bundle, binary_tree
):
    """It crashed formatting "auto" as a number when the range test applied the phase."""
    config = write_config(
        tmp_path / "ft.yaml",
        binary_tree,
        model={"init_from": str(binary_bundle)},
        train={
            "epochs": 1,
            "seed": 7,
            "fine_tune": {"epochs": 2, "learning_rate": "auto", "unfreeze": "all"},
        },
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "ft")
    assert result.exit_code == 0, result.output
    assert "fine_tune.learning_rate: auto -> " in result.stderr
    [found] = read_json(tmp_path / "ft" / "bundle.json")["lr_find"]
    assert found["phase"] == "fine_tune" and found["suggested"] > 0
    history = read_json(tmp_path / "ft" / "history.json")
    assert history["learning_rate"][1:] == pytest.approx([found["suggested"]] * 2)
