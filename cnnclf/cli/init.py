"""`cnnclf init`: a commented config chosen from a data folder (training/advisor.py decides)."""

from __future__ import annotations

from pathlib import Path

import click

from cnnclf.cli.group import common_options


@click.command("init")
@click.argument("data_dir", metavar="DATA", type=click.Path())
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    help="Write the config to this YAML file (default: print it; the summary goes to stderr).",
)
@click.option("--overwrite", is_flag=True, help="Allow --out to replace an existing file.")
@common_options
def init_command(data_dir, out, overwrite):
    """Write a commented config chosen from the data in DATA.

    DATA is what `train --data` takes: a folder with training_set/ (and test_set/), the class
    folders themselves, or a label file. Each choice (model, image size, augmentation, class
    weights, threshold, early stopping) carries a comment saying why. No TensorFlow is loaded
    and nothing is downloaded: ImageNet weights are suggested only when they are in Keras'
    cache or their server answers (never with CNNCLF_OFFLINE=1).

    \b
      cnnclf init data/brain --out brain.yaml
      cnnclf train --config brain.yaml
    """
    from cnnclf.training import advisor

    target = Path(out) if out else None
    if target is not None and target.exists() and not overwrite:
        advisor.write_config("", target, overwrite)  # refuses, before reading any image
    found = advisor.survey(data_dir)
    plan = advisor.choose(found, target.parent if target else Path.cwd())
    text = advisor.render(plan, data_dir)
    if target is None:
        click.echo(text, nl=False)
        for line in plan.summary:
            click.echo(line, err=True)
        return
    advisor.write_config(text, target, overwrite)
    for line in plan.summary:
        click.echo(line)
    click.echo(f"config: {target}  (train it: cnnclf train --config {target})")
