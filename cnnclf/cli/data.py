"""`cnnclf check-data` and `preview-augment`: the training images, before any training."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cnnclf.cli import _lazy
from cnnclf.cli.data_option import data_option
from cnnclf.cli.group import common_options, flags, format_option, set_option


@click.command("check-data")
@click.argument("data_dir", required=False, type=click.Path())
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Check the config's data.train_dir/test_dir (or --data) against its data.image_size.",
)
@data_option("data_flag")
@click.option(
    "--image-size",
    type=(int, int),
    metavar="H W",
    help="Flag images smaller than this (default: the config's, if given).",
)
@format_option("Report format.")
@click.option(
    "--fix-to",
    "fix_to",
    type=click.Path(file_okay=False),
    help="Write a cleaned copy here (a new or empty folder outside the data): unreadable "
    "files, duplicates and leaked training copies dropped; odd formats converted; "
    "extensions corrected.",
)
@common_options
def check_data_command(data_dir, config_path, data_flag, image_size, fmt, fix_to):
    """Count images per split and class, and list every problem file with what to do.

    DATA_DIR (or --data DIR) holds training_set/ and test_set/, train/ and val/, or is itself
    one class-folder tree, as for `train --data`; or it is a .csv/.jsonl label file, or a
    folder holding train.csv (and val.csv or test.csv) or labels.csv. Exits 2, as train
    would, only for problems that would stop training.
    """
    from cnnclf.cli.render import render_check
    from cnnclf.config import Config, load_config
    from cnnclf.data.check import check_data, check_fix_target, write_fixed_copy
    from cnnclf.data.layout import find_splits
    from cnnclf.errors import ConfigError
    from cnnclf.model.transfer import small_data_advice

    if data_dir and data_flag and data_dir != data_flag:
        raise ConfigError(f"--data {data_flag}: conflicts with DATA_DIR {data_dir}; give one")
    folder = data_dir or data_flag
    if not (folder or config_path):
        raise click.UsageError("give DATA_DIR, --data or --config")
    splits = find_splits(folder, "DATA_DIR" if data_dir else "--data") if folder else {}
    config = load_config(config_path) if config_path else None
    if config is not None:
        image_size = image_size or tuple(config.data.image_size)
        splits = splits or _config_splits(config.data)
    if fix_to:  # before the data is read: a wrong target is known at once
        sources = ([Path(folder)] if folder else []) + list(splits.values())
        check_fix_target(sources, Path(fix_to))
    # No test set: training holds data.validation_split out of the training images.
    fraction = (config or Config()).data.validation_split if len(splits) == 1 else None
    report = check_data(splits, image_size, validation_split=fraction)
    if config is None or not (config.model.backbone or config.model.init_from):
        color_mode = config.data.color_mode if config else "rgb"
        report.small_data_advice = small_data_advice(image_size, color_mode)
    click.echo(render_check(report.to_json(), fmt))
    if fix_to:
        counts = write_fixed_copy(splits, report, Path(fix_to))
        click.echo(
            f"wrote a cleaned copy to {fix_to}: {counts['written']} images "
            f"({counts['converted']} converted), {counts['dropped']} dropped",
            err=True,
        )
    if report.fatal:
        sys.exit(2)  # what stops training: train exits 2 for it too (a data-layout error)


def _config_splits(data) -> dict[str, Path]:
    """The splits a config's `data` section names, to check."""
    from cnnclf.errors import ConfigError

    if data.train_dir is None:
        raise ConfigError(
            "data.train_dir: is required (a folder with one sub-folder per class, or a .csv/.jsonl "
            "label file); or give --data"
        )
    splits = {"training_set": Path(data.train_dir)}
    if data.test_dir:
        splits["test_set"] = Path(data.test_dir)
    return splits


@click.command("preview-augment")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML config whose data and augmentation to preview.",
)
@set_option()
@click.option(
    "--n",
    "n",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="How many training images.",
)
@click.option(
    "--out", "out", type=click.Path(dir_okay=False), required=True, help="PNG file to write."
)
@common_options
def preview_augment(config_path, overrides, n, out):
    """Show training images before and after the configured augmentation, as a grid PNG."""
    from cnnclf.config import load_config
    from cnnclf.data.layout import discover

    config = load_config(config_path, overrides)
    discover(config.data, config.train.seed)  # layout errors before TensorFlow loads
    _lazy.import_tensorflow(flags()["verbose"])
    result = _lazy.preview().preview_grid(config, n, out)
    click.echo(
        f"wrote {result['out']}: {result['images']} images, "
        f"{result['size'][0]}x{result['size'][1]} pixels"
    )
