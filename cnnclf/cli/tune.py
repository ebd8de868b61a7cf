"""`cnnclf tune`: a hyperparameter sweep that any number of processes share."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cnnclf.cli.group import common_options, flags, format_option, set_option


@click.command("tune")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML config to tune; its tune: section is the search space (configs/reference.yaml).",
)
@set_option("Override a config key by dotted path before each trial's own values. Repeatable.")
@click.option(
    "--trials",
    "n_trials",
    type=click.IntRange(min=1),
    required=True,
    help="Finished trials (complete or pruned) wanted in all, across every worker of the study.",
)
@click.option(
    "--storage",
    metavar="URL",
    help="Optuna RDB storage every worker shares: sqlite:///path.db on one machine, "
    "postgresql://... or mysql://... for many (default: sqlite:///<out>/study.db).",
)
@click.option("--study", "study_name", help="Study name (default: the config file's name).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Trial bundles (trials/<number>/), best.yaml, trials.csv and plots "
    "(default: runs/tune-<study>).",
)
@click.option(
    "--pruner",
    type=click.Choice(["median", "halving", "none"]),
    default="median",
    show_default=True,
    help="Stop bad trials early from each epoch's validation metric: median rule, "
    "successive halving, or never.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "gpu"]),
    default="auto",
    show_default=True,
    help="As train --device; on a machine with several GPUs each worker takes one of its own.",
)
@format_option("How the summary is printed.")
@common_options
def tune(config_path, overrides, n_trials, storage, study_name, out_dir, pruner, device, fmt):
    """Search hyperparameters; run the same command in several processes to share the work."""
    from cnnclf.tuning.study import TuneJob, require_optuna

    require_optuna()  # one line, before the config, Optuna or TensorFlow load
    from cnnclf.tuning.study import tune as run_tune

    name = study_name or Path(config_path).stem
    job = TuneJob(
        config_path=Path(config_path),
        overrides=tuple(overrides),
        n_trials=n_trials,
        out_dir=Path(out_dir) if out_dir else Path("runs") / f"tune-{name}",
        storage=storage,
        study_name=name,
        pruner=pruner,
        device=device,
        verbose=flags()["verbose"],
    )
    report = run_tune(job)
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(summary_table(report))


def summary_table(report) -> str:
    """The trials as an aligned table, then the best one and the files written."""
    names = sorted({name for row in report.rows for name in row["params"]})
    header = ["trial", "state", report.metric, *names, "seconds", "note"]
    lines = [header]
    for row in report.rows:
        value = row["value"]
        lines.append(
            [
                str(row["number"]),
                row["state"].lower(),
                "" if value is None else f"{value:.4f}",
                *(_cell(row["params"].get(name)) for name in names),
                "" if row["seconds"] is None else f"{row['seconds']:.0f}",
                row["note"],
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    if report.best:
        best = report.best
        text.append(
            f"best: trial {best['number']}, {report.metric} {best['value']:.4f}; "
            f"bundle {best['bundle']}"
        )
    text += [f"{what}: {path}" for what, path in report.files.items()]
    return "\n".join(text)


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
