"""The sweep's reports (cnnclf/tuning/reports.py) and the missing-extra message."""

import csv
import io

import pytest

from cnnclf.errors import CnnclfError
from cnnclf.tuning import study
from cnnclf.tuning.reports import trial_rows, trials_csv

optuna = pytest.importorskip("optuna")


def test_trials_csv_has_a_column_per_parameter_and_says_why_a_trial_failed():
    s = optuna.create_study(direction="maximize")
    s.add_trial(
        optuna.create_trial(
            params={"lr": 0.1},
            distributions={"lr": optuna.distributions.FloatDistribution(0.01, 1)},
            value=0.9,
            user_attrs={"bundle": "t/0"},
        )
    )
    s.add_trial(
        optuna.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"surplus": True})
    )
    s.add_trial(
        optuna.create_trial(state=optuna.trial.TrialState.FAIL, system_attrs={"failed_trial": 0})
    )
    rows = list(csv.DictReader(io.StringIO(trials_csv(trial_rows(s.get_trials())))))
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL", "FAIL"]
    assert rows[0]["lr"] == "0.1" and rows[0]["bundle"] == "t/0"
    assert rows[1]["note"].startswith("surplus") and rows[1]["bundle"] == ""
    assert "retry of trial 0" in rows[2]["note"]


def test_without_optuna_one_line_says_what_to_install(monkeypatch):
    monkeypatch.setattr(study.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        CnnclfError, match=r"^cnnclf tune needs Optuna: pip install 'cnnclf\[tune\]'$"
    ):
        study.require_optuna()


def test_the_storage_password_is_never_shown():
    assert "secret" not in study.masked("postgresql://me:secret@db.example/optuna")
