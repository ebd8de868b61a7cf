"""`cnnclf tune` end to end: worker processes sharing one SQLite study, one of them killed.

What must hold (cnnclf/tuning/budget.py): `--trials N` is the number of finished trials
(complete or pruned) in the study, never more or fewer, however many workers run it and even
when one dies mid-trial; a dead worker's trial is marked FAIL and retried with its parameters.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import communicate, make_tree, wait_for, write_config

from cnnclf.config import load_config

optuna = pytest.importorskip("optuna")

pytestmark = pytest.mark.slow

N_TRIALS = 4


def tune_command(config: Path, out: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "cnnclf.cli", "tune", "--config", str(config)]
    return [*command, "--trials", str(N_TRIALS), "--out", str(out), "--pruner", "none", *extra]


def tiny_sweep(tmp_path: Path, epochs: int) -> Path:
    tree = make_tree(tmp_path / "data", n_train=8, n_test=4)
    return write_config(
        tmp_path / "sweep.yaml",
        tree,
        train={"epochs": epochs, "seed": 7},
        # Heartbeats every second: a dead worker's trial is found within a few seconds.
        tune={"heartbeat_interval": 1, "grace_period": 5, "batch_size": [4, 8]},
    )


def study_trials(out: Path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}")
    return optuna.load_study(study_name="sweep", storage=storage).get_trials()


def finished(trials) -> list:
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


def start(command: list[str]) -> subprocess.Popen:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_two_workers_finish_exactly_n_trials(tmp_path):
    config, out = tiny_sweep(tmp_path, epochs=1), tmp_path / "sweep"
    workers = [start(tune_command(config, out)) for _ in range(2)]
    for worker in workers:
        _, err = communicate(worker, "a tune worker", timeout=240)
        assert worker.returncode == 0, err
    trials = study_trials(out)
    assert len(finished(trials)) == N_TRIALS
    workers_seen = {t.user_attrs["worker"] for t in finished(trials)}
    assert len(workers_seen) == 2, "both workers ran trials"
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert sum(row["state"] in ("COMPLETE", "PRUNED") for row in rows) == N_TRIALS
    for t in finished(trials):  # each trial is an ordinary published bundle
        assert (out / "trials" / str(t.number) / "bundle.json").is_file()
    best = load_config(out / "best.yaml")  # a config that trains as it is
    assert best.data.batch_size in (4, 8)
    assert yaml.safe_load((out / "best.yaml").read_text())["tune"]["batch_size"] == [4, 8]
    assert (out / "history.png").stat().st_size > 0


def test_a_killed_workers_trial_is_failed_and_retried(tmp_path):
    config, out = tiny_sweep(tmp_path, epochs=3), tmp_path / "sweep"
    survivor = start(tune_command(config, out))
    victim = start(tune_command(config, out))

    def victims_running_trial():
        if not (out / "study.db").exists():
            return None
        try:
            trials = study_trials(out)
        except Exception:  # the study is not created yet
            return None
        return next(
            (
                t
                for t in trials
                if t.state.name == "RUNNING"
                and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
            ),
            None,
        )

    killed = wait_for(victims_running_trial, "the second worker to start a trial", timeout=120)
    victim.send_signal(signal.SIGKILL)
    communicate(victim, "the killed worker", timeout=30)
    _, err = communicate(survivor, "the surviving worker", timeout=240)
    assert survivor.returncode == 0, err

    trials = {t.number: t for t in study_trials(out)}
    assert len(finished(trials.values())) == N_TRIALS
    assert trials[killed.number].state.name == "FAIL"
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state.name in ("COMPLETE", "PRUNED")
    assert retries[0].params == killed.params
    assert f"retrying trial {killed.number}" in err
