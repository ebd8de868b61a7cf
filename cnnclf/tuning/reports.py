"""What a sweep leaves behind: best.yaml, trials.csv, two plots and the summary rows.

Every worker writes them when the sweep is done (each file through a temporary name and a
rename, so two workers finishing together never leave a half-written one); they describe the
whole study, so any worker's copy is the same.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnclf.config import Config, dump_config, load_config

log = logging.getLogger("cnnclf")

COLUMNS = ("number", "state", "value", "seconds", "note", "bundle")


@dataclass
class TuneReport:
    """The sweep as the CLI shows it."""

    study_name: str
    storage: str
    metric: str
    rows: list[dict] = field(default_factory=list)
    best: dict | None = None
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "study": self.study_name,
            "storage": self.storage,
            "metric": self.metric,
            "best": self.best,
            "trials": self.rows,
            "files": self.files,
        }


def trial_rows(trials: list[Any]) -> list[dict]:
    """One plain row per trial: number, state, value, its parameters, seconds, a note."""
    rows = []
    for t in trials:
        seconds = (
            round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value if t.state.name == "COMPLETE" else None,
                "params": dict(t.params),
                "seconds": seconds,
                "note": _note(t),
                "bundle": t.user_attrs.get("bundle") if not t.user_attrs.get("surplus") else None,
            }
        )
    return rows


def _note(t: Any) -> str:
    notes = []
    if t.system_attrs.get("failed_trial") is not None:
        notes.append(f"retry of trial {t.system_attrs['failed_trial']}")
    if t.user_attrs.get("surplus"):
        notes.append("surplus: another worker took the last place; not trained")
    elif t.state.name == "FAIL":
        notes.append("worker stopped or died during the trial")
    if "pruned_at_epoch" in t.user_attrs:
        notes.append(f"pruned after epoch {t.user_attrs['pruned_at_epoch']}")
    if "error" in t.user_attrs:
        notes.append(f"training failed: {t.user_attrs['error']}")
    return "; ".join(notes)


def write_reports(study: Any, job: Any, config: Config) -> TuneReport:
    from cnnclf.tuning.study import masked

    trials = study.get_trials(deepcopy=False)
    report = TuneReport(job.study_name, masked(job.storage_url), config.tune.metric)
    report.rows = trial_rows(trials)
    out = job.out_dir
    _write(out / "trials.csv", trials_csv(report.rows))
    report.files["trials"] = str(out / "trials.csv")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        report.best = {
            "number": best.number,
            "value": best.value,
            "params": dict(best.params),
            "bundle": best.user_attrs.get("bundle"),
        }
        _write(out / "best.yaml", best_yaml(job, best, config.tune.metric))
        report.files["best_config"] = str(out / "best.yaml")
    report.files.update(write_plots(study, out))
    return report


def trials_csv(rows: list[dict]) -> str:
    names = sorted({name for row in rows for name in row["params"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*COLUMNS[:3], *names, *COLUMNS[3:]])
    for row in rows:
        writer.writerow(
            [
                row["number"],
                row["state"],
                "" if row["value"] is None else row["value"],
                *(row["params"].get(name, "") for name in names),
                "" if row["seconds"] is None else row["seconds"],
                row["note"],
                row["bundle"] or "",
            ]
        )
    return buffer.getvalue()


def best_yaml(job: Any, best: Any, metric: str) -> str:
    """The user's config with the best trial's parameters applied, paths made absolute so it
    trains as it is from any folder."""
    from cnnclf.training.run import resolve_paths

    sets = list(best.user_attrs.get("overrides", []))
    config = resolve_paths(load_config(job.config_path, [*job.overrides, *sets]))
    header = [
        f"# cnnclf tune: the best of study {job.study_name!r}: trial {best.number}, "
        f"{metric} {best.value:.4f}",
        f"# {job.config_path} with: {' '.join(sets) or '(nothing changed)'}",
        "# Train it as it is: cnnclf train --config best.yaml",
    ]
    return "\n".join(header) + "\n" + dump_config(config)


def write_plots(study: Any, out: Path) -> dict[str, str]:
    """optimisation history and parameter importance as PNGs; a plot the study cannot make
    yet (importance needs two complete trials and a parameter) is left out, with a note."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the plots are files
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as plots

    written = {}
    for name, draw in (
        ("history", plots.plot_optimization_history),
        ("importance", plots.plot_param_importances),
    ):
        path = out / f"{name}.png"
        try:
            with warnings.catch_warnings():  # Optuna's experimental and few-trials notices
                warnings.simplefilter("ignore")
                draw(study)
            figure = plt.gcf()
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            temporary = path.with_name(f".{path.name}.{os.getpid()}.png")
            figure.savefig(temporary, dpi=100)
            os.replace(temporary, path)
            written[name] = str(path)
        except Exception as exc:  # too few trials, a single parameter: not worth failing for
            log.info("no %s plot: %s", name, (str(exc).splitlines() or [type(exc).__name__])[0])
        finally:
            plt.close("all")
    return written


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
