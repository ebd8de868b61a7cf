"""Interrupted training: Ctrl-C and kill -9 at an epoch boundary's far side, then --resume."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import communicate, read_json, run_cli, run_process, wait_for, write_config

EPOCHS = 30


def start_training(config: Path, out: Path) -> subprocess.Popen:
    # A test run started in the background (nohup, `&` in a script) passes SIGINT on as
    # ignored, and Python then keeps ignoring Ctrl-C, as it should; the child here must get
    # the interactive default to test what a user's Ctrl-C does.
    return subprocess.Popen(
        [sys.executable, "-m", "cnnclf.cli", "train", "--config", str(config), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def interrupt_after_first_epoch(process: subprocess.Popen, staging: Path, sig) -> int:
    """Sends `sig` as soon as a completed epoch is on disk; returns the epochs saved then."""
    progress = staging / "progress.json"
    wait_for(
        lambda: progress.exists() or process.poll() is not None,
        "the first completed epoch (progress.json)",
        poll=0.01,
    )
    assert progress.exists(), f"the run ended before an epoch; stderr: {process.communicate()[1]}"
    done = json.loads(progress.read_text())["completed_epochs"]
    process.send_signal(sig)
    return done


def killed_run(config: Path, tmp_path: Path):
    """A run killed with SIGKILL after its first saved epoch: (out, staging)."""
    out, staging = tmp_path / "bundle", tmp_path / ".bundle.partial"
    process = start_training(config, out)
    interrupt_after_first_epoch(process, staging, signal.SIGKILL)
    communicate(process, "the killed run")
    assert process.returncode == -signal.SIGKILL
    return out, staging


@pytest.fixture
def config(tmp_path, binary_tree):
    return write_config(
        tmp_path / "c.yaml",
        binary_tree,
        train={"epochs": EPOCHS, "seed": 5},
        data={
            "train_dir": str(binary_tree / "training_set"),
            "test_dir": str(binary_tree / "test_set"),
            "image_size": [24, 24],
            "batch_size": 4,
        },
    )


def assert_resumes_to_the_full_run(config: Path, out: Path, staging: Path):
    result = run_cli("train", "--config", config, "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming after epoch" in result.stderr
    history = read_json(out / "history.json")
    assert history["epoch"] == list(range(1, EPOCHS + 1))
    assert len(history["loss"]) == EPOCHS
    assert not staging.exists()
    assert not [p for p in out.iterdir() if p.name.startswith(("checkpoint", "progress"))]
    assert read_json(out / "bundle.json")["epochs"] == EPOCHS


@pytest.mark.slow
def test_ctrl_c_exits_cleanly_and_says_how_to_resume(tmp_path, config):
    out, staging = tmp_path / "bundle", tmp_path / ".bundle.partial"
    process = start_training(config, out)
    interrupt_after_first_epoch(process, staging, signal.SIGINT)
    _, stderr = communicate(process, "the interrupted run to exit")
    assert process.returncode == 130, stderr
    assert "interrupted after epoch" in stderr and "Traceback" not in stderr
    assert f"resume with: cnnclf train --config {config} --out {out} --resume" in stderr
    assert not out.exists() and (staging / "progress.json").exists()
    assert_resumes_to_the_full_run(config, out, staging)


@pytest.mark.slow
def test_kill_9_then_resume_ends_with_the_same_epoch_count(tmp_path, config):
    out, staging = killed_run(config, tmp_path)
    assert not out.exists()
    again = run_cli("train", "--config", config, "--out", out)  # without --resume
    assert again.exit_code == 1 and "add --resume to continue it" in again.stderr
    assert_resumes_to_the_full_run(config, out, staging)


@pytest.mark.slow
def test_resume_refuses_a_different_config(tmp_path, config):
    out, _ = killed_run(config, tmp_path)
    result = run_cli(
        "train", "--config", config, "--out", out, "--resume", "--set", "train.learning_rate=0.01"
    )
    assert result.exit_code == 2
    assert (
        "--resume: train.learning_rate is 0.01 but the interrupted run used 0.001" in result.stderr
    )


@pytest.mark.slow
def test_a_run_killed_under_an_older_cnnclf_resumes_with_new_keys_at_their_defaults(
    tmp_path, config
):
    """Upgrading between a kill and --resume: keys the old run's config lacks are defaults."""
    out, staging = killed_run(config, tmp_path)
    progress = read_json(staging / "progress.json")
    for key in ("jit_compile", "steps_per_execution"):  # keys added after the first release
        del progress["config"]["train"][key]
    (staging / "progress.json").write_text(json.dumps(progress))
    changed = run_cli(
        "train", "--config", config, "--out", out, "--resume", "--set", "train.jit_compile=false"
    )
    assert changed.exit_code == 2
    assert (
        "--resume: train.jit_compile is False but the interrupted run used 'auto'" in changed.stderr
    )
    assert_resumes_to_the_full_run(config, out, staging)


def test_resume_with_nothing_to_resume(tmp_path, config):
    result = run_cli("train", "--config", config, "--out", tmp_path / "b", "--resume")
    assert result.exit_code == 1 and "no interrupted run to resume" in result.stderr
    no_out = run_cli("train", "--config", config, "--resume")
    assert no_out.exit_code == 2 and "--resume needs --out DIR" in no_out.stderr


@pytest.mark.slow
def test_a_resume_config_mismatch_is_found_before_tensorflow_loads(tmp_path, config, monkeypatch):
    out = tmp_path / "bundle"
    from cnnclf import faults

    # A run stopped by a full disk just before its bundle: every epoch is resumable.
    monkeypatch.setenv(faults.FAULT_ENV, "bundle.model_written=enospc")
    monkeypatch.setattr(faults, "_counts", {})
    stopped = run_cli("train", "--config", config, "--out", out, "--set", "train.epochs=2")
    monkeypatch.delenv(faults.FAULT_ENV)
    assert stopped.exit_code == 1 and "--resume" in stopped.stderr, stopped.output
    probe = (
        "import sys\nfrom cnnclf.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
        "    print('tensorflow loaded:', 'tensorflow' in sys.modules, file=sys.stderr)\n"
        "    raise\n"
    )
    result = run_process(
        [
            sys.executable,
            "-c",
            probe,
            "train",
            "--config",
            str(config),
            "--out",
            str(out),
            "--resume",
            "--set",
            "train.epochs=2",
            "--set",
            "train.learning_rate=3e-3",
        ],
        "cnnclf train --resume with a changed config",
    )
    assert result.returncode == 2, result.stderr
    assert (
        "--resume: train.learning_rate is 0.003 but the interrupted run used 0.001" in result.stderr
    )
    assert "tensorflow loaded: False" in result.stderr


@pytest.mark.slow
def test_checkpoints_every_n_epochs_resume_from_the_last_one_saved(tmp_path, binary_tree):
    import os

    config = write_config(
        tmp_path / "c.yaml",
        binary_tree,
        train={"epochs": 5, "seed": 5, "checkpoint_every_epochs": 2},
    )
    out, staging = tmp_path / "bundle", tmp_path / ".bundle.partial"
    # Killed as the second checkpoint is committed: with every 2 epochs, that is epoch 4.
    process = run_process(
        [sys.executable, "-m", "cnnclf.cli", "train", "--config", str(config), "--out", str(out)],
        "a run killed at its second checkpoint",
        env={**os.environ, "CNNCLF_FAULT": "checkpoint.committed@2=kill"},
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    progress = read_json(staging / "progress.json")
    assert progress["completed_epochs"] == 4
    assert progress["history"]["epoch"] == [1, 2, 3, 4]
    # Epochs 1 and 3 were never written (the kill came before epoch 2's file was pruned).
    assert {p.name for p in staging.glob("checkpoint-*")} <= {
        "checkpoint-2.npz",
        "checkpoint-4.npz",
    }
    result = run_cli("train", "--config", config, "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert read_json(out / "history.json")["epoch"] == [1, 2, 3, 4, 5]
