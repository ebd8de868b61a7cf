"""`cnnclf lr-find`: the learning-rate range test of a config (training/lr_find.py runs it)."""

from __future__ import annotations

import json

import click

from cnnclf.cli import _lazy
from cnnclf.cli.data_option import data_option, with_data_folders
from cnnclf.cli.group import common_options, flags, format_option, set_option
from cnnclf.training.lr_find import DEFAULT_STEPS, MAX_STEPS


@click.command("lr-find")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML config whose first phase is tested (model, data, optimizer, loss).",
)
@set_option()
@data_option()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Write lr_find.png (the curve, the suggestion marked) and lr_find.json here.",
)
@format_option("How to print the result.")
@click.option(
    "--steps",
    type=int,
    default=DEFAULT_STEPS,
    show_default=True,
    help="Training steps (one batch each) over rates 1e-7 to 10; fewer if the loss diverges.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "gpu"]),
    default="auto",
    show_default=True,
    help="Run on CPU only, require a GPU, or use what is there.",
)
@common_options
def lr_find_command(config_path, overrides, data_dir, out_dir, fmt, steps, device):
    """Suggest a learning rate: the range test (Smith 2015, fastai's lr_find).

    Trains a throw-away copy of the config's first-phase model for up to --steps batches at an
    exponentially growing rate, stops when the smoothed loss exceeds 4x its best, and suggests
    a tenth of the rate at the smoothed loss's minimum (the steepest descent and fastai's
    valley are shown beside it). No bundle or run folder is written; train.learning_rate: auto
    runs the same test.
    """
    from cnnclf.config import load_config
    from cnnclf.errors import ConfigError

    if not 2 <= steps <= MAX_STEPS:  # before TensorFlow loads, like every usage error
        raise ConfigError(f"--steps: must be an integer in [2, {MAX_STEPS}], got {steps}")
    config = load_config(
        config_path, with_data_folders(overrides, data_dir) if data_dir else overrides
    )
    _lazy.import_tensorflow(flags()["verbose"])
    curve = _lazy.lr_find().lr_find(
        config, steps=steps, out_dir=out_dir, verbose=flags()["verbose"], device=device
    )
    record = curve.record()
    if fmt == "json":
        click.echo(json.dumps(dict(record, rates=curve.rates, smoothed=curve.smoothed)))
        return
    for name in ("suggested", "steepest", "minimum", "valley"):
        click.echo(f"{name:<10} {record[name]:.3g}")
    click.echo(f"{'rule':<10} {record['rule']}")
    click.echo(
        f"{'steps':<10} {record['steps']} ({record['stopped']}; "
        f"rates {record['range'][0]:.1e} to {record['range'][1]:.1e}; {record['seconds']} s)"
    )
    if out_dir:
        click.echo(f"{'curve':<10} {out_dir}/lr_find.png")
