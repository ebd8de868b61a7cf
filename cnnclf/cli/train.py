"""`cnnclf train`: a config in, a bundle out."""

from __future__ import annotations

import sys

import click

from cnnclf.cli import _lazy
from cnnclf.cli.data_option import data_option, with_data_folders
from cnnclf.cli.group import common_options, flags, set_option


@click.command("train")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML config (see configs/reference.yaml for every key).",
)
@set_option(
    "Override a config key by dotted path, e.g. --set train.epochs=3 "
    "--set data.image_size=[96,96]. Repeatable."
)
@data_option()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Write the bundle exactly here (default: a new folder under runs/).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Allow --out to replace an existing bundle (only once training succeeds).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run into --out DIR from its last completed epoch.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "gpu"]),
    default="auto",
    show_default=True,
    help="Train on CPU only, require a GPU, or use what is there.",
)
@common_options
def train(config_path, overrides, data_dir, out_dir, overwrite, resume, device):
    """Train a model from a config and save it as a bundle."""
    from cnnclf.config import load_config
    from cnnclf.errors import RunStopped

    config = load_config(
        config_path, with_data_folders(overrides, data_dir) if data_dir else overrides
    )
    state = flags()
    try:
        result = _lazy.training_run().train(
            config,
            out_dir=out_dir,
            config_path=config_path,
            overwrite=overwrite,
            resume=resume,
            verbose=state["verbose"],
            device=device,
        )
    except RunStopped as exc:
        if state["debug"]:
            raise
        _report_stopped(exc, config_path, overrides, data_dir)
        sys.exit(exc.exit_code)
    if result.bundle_dir is None:
        return  # a non-chief multi_worker worker: the chief reports the bundle
    click.echo(f"bundle: {result.bundle_dir}  ({_figures(result)}; {result.seconds:.1f} s)")


def _figures(result) -> str:
    """The saved weights' metrics, validation first (the figure that says how good the model
    is), each set with the images it was measured on:
    "val_accuracy 0.5000 on 4 images, val_loss 0.6931; accuracy 0.7692 on 13 training images, ...".
    """
    final = {k: v for k, v in result.final_metrics.items() if k != "learning_rate"}
    groups = []
    whole = result.image_counts or {}  # multi-label: class counts count an image per label
    for prefix, counts, what, total in (
        ("val_", result.validation_images, "images", whole.get("validation")),
        ("", result.train_images, "training images", whole.get("train")),
    ):
        names = [k for k in final if k.startswith("val_") == bool(prefix)]
        names.sort(key=lambda k: k != f"{prefix}accuracy")  # accuracy first, then as recorded
        shown = [f"{k} {final[k]:.4f}" for k in names]
        if shown and counts:
            shown[0] += f" on {total if total is not None else sum(counts.values())} {what}"
        groups.append(", ".join(shown))
    return "; ".join(group for group in groups if group)


def _report_stopped(exc, config_path, overrides, data_dir) -> None:
    """Why the run stopped and, when an epoch completed, the command that resumes it."""
    click.echo(f"{'' if exc.exit_code in (130, 143) else 'error: '}{exc}", err=True)
    if exc.completed_epochs:
        import shlex

        words = ["cnnclf", "train", "--config", str(config_path)]
        for o in overrides:
            words += ["--set", o]
        words += ["--data", str(data_dir)] if data_dir else []
        words += ["--out", str(exc.destination), "--resume"]
        click.echo("resume with: " + shlex.join(words), err=True)
