"""`cnnclf summary`: a model's layers, parameters and receptive field, from a bundle or a config."""

from __future__ import annotations

import click

from cnnclf.cli import _lazy
from cnnclf.cli.bundles import load_model, say_loading
from cnnclf.cli.group import common_options, flags, format_option, set_option
from cnnclf.errors import ConfigError


@click.command("summary")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(),
    help="Bundle folder to describe, with its training metrics.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config whose model to describe (built for 2 classes).",
)
@set_option("With --config: override a config key by dotted path. Repeatable.")
@format_option("Output format.")
@common_options
def summary_command(model_dir, config_path, overrides, fmt):
    """Layers, parameters, per-block feature-map size and receptive field of a model.

    Give exactly one of --model (a trained bundle, with its metrics) or --config.
    """
    if (model_dir is None) == (config_path is None):
        raise ConfigError("summary: give exactly one of --model BUNDLE or --config FILE")
    if overrides and config_path is None:
        raise ConfigError("summary: --set needs --config (a bundle's config is fixed)")
    summarizing = _lazy.summary()
    if config_path is not None:
        from cnnclf.config import load_config

        config = load_config(config_path, overrides)
        say_loading("loading TensorFlow ...")
        _lazy.import_tensorflow(flags()["verbose"])
        summary = summarizing.summarize_config(config)
    else:
        summary = summarizing.summarize_bundle(load_model(model_dir, keras_only="summary"))
    click.echo(summarizing.format_summary(summary, fmt))
