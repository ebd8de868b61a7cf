"""`--data DIR`, shared by `train` and `check-data`: one folder instead of two `--set` paths.

DIR is read by `layout.find_splits`, the function `check-data DIR` reads it with, so both
commands agree on what a layout means.
"""

from __future__ import annotations

import json

import click

from cnnclf.errors import ConfigError

# The keys --data sets; a --set of either beside it is refused rather than silently overruled.
DATA_KEYS = ("data.train_dir", "data.test_dir")


def data_option(dest: str = "data_dir"):
    """The `--data DIR` option, passed to the command as `dest`."""
    return click.option(
        "--data",
        dest,
        type=click.Path(),
        help="Folder of images holding training_set/ and test_set/, train/ and val/, or the "
        "class folders themselves (then data.validation_split is held out). Sets "
        "data.train_dir and data.test_dir, from the current folder. Label files work too: a "
        "folder holding train.csv (and val.csv or test.csv) or labels.csv, or the .csv or "
        ".jsonl file itself.",
    )


def with_data_folders(overrides: tuple[str, ...] | list[str], data_dir: str) -> list[str]:
    """`overrides` (--set values) plus data.train_dir and data.test_dir as found in `data_dir`.

    Raises `ConfigError` when `overrides` sets either key too, or `data_dir` has no layout.

    Example:
        with_data_folders(["train.epochs=3"], "pets")
        # ['train.epochs=3', 'data.train_dir="pets/train"', 'data.test_dir="pets/val"']
    """
    from cnnclf.data.layout import train_and_test_dirs

    for override in overrides:
        key = override.partition("=")[0].strip()
        if key in DATA_KEYS:
            raise ConfigError(
                f"--data: conflicts with --set {key}; give the folders either with --data or "
                "with --set, not both"
            )
    train_dir, test_dir = train_and_test_dirs(data_dir)
    # JSON strings are YAML strings: a folder named `1e5`, `null` or `a: b` stays that folder.
    return [
        *overrides,
        f"data.train_dir={json.dumps(train_dir)}",
        f"data.test_dir={json.dumps(test_dir)}",
    ]
