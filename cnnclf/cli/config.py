"""`cnnclf config`: a config validated and printed resolved, or the reference config."""

from __future__ import annotations

import click

from cnnclf.cli.group import common_options, set_option


@click.command("config")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config to resolve (default: the built-in defaults).",
)
@set_option()
@click.option("--reference", is_flag=True, help="Print the fully commented reference config.")
@common_options
def config_command(config_path, overrides, reference):
    """Validate a config and print it resolved (every key, defaults filled in)."""
    from cnnclf.config import dump_config, implied_comments, load_config_explained, reference_yaml

    if reference:
        click.echo(reference_yaml(), nl=False)
        return
    config, implied = load_config_explained(config_path, overrides)
    click.echo(implied_comments(implied) + dump_config(config), nl=False)
