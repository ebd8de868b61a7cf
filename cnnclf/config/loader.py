"""Loading a config: the file, paths made relative to it, --set overrides, then validation.

Example:
    config = load_config("configs/cats_dogs.yaml", overrides=["train.epochs=3"])
    config.train.epochs  # 3
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from cnnclf.config.defaults import Implied
from cnnclf.config.overrides import apply_override
from cnnclf.config.parse import parse_config_explained
from cnnclf.config.schema import Config, DataConfig
from cnnclf.config.yaml_io import read_yaml


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Reads a YAML config (or starts from defaults when `path` is None) and applies overrides.

    Args:
        path: a YAML file using the sections `data`, `augment`, `model` and `train`.
        overrides: `section.key=value` strings; values are parsed as YAML (`[96, 96]`, `true`).

    Returns:
        A validated `Config`. Raises `ConfigError` naming the file or key on any problem.
    """
    return load_config_explained(path, overrides)[0]


def load_config_explained(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Config, list[Implied]]:
    """As `load_config`, with the implied defaults applied (what `cnnclf config` prints).

    Returns:
        The config and the `defaults.Implied` changes made to it: keys the user left out
        whose value follows from another key (data.image_size from model.backbone, ...).
    """
    raw = read_yaml(path) if path is not None else {}
    if path is not None:
        _resolve_from_config_folder(raw, Path(path))
    for override in overrides:
        apply_override(raw, override)
    return parse_config_explained(raw)


def _is_url(value: str) -> bool:
    """A URL (s3://bucket/key, gs://...) is not a path: it is never made relative to a folder.
    (cnnclf.storage.is_url says the same; config sits below storage in the rooms' order.)"""
    scheme, sep, _ = value.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.isalnum() and scheme != "file"


def _resolve_from_config_folder(raw: dict, path: Path) -> None:
    """Relative folder paths in a config file are relative to that file, as in every tool that
    reads a config: the same config works from any working directory. (`--set` values stay
    relative to the working directory, like any command-line path.)

    A path that exists only from the working directory, as configs written before this rule
    assumed, is still used, with one warning saying how to write it now.
    """
    base = path.parent
    model = raw.get("model")
    if isinstance(model, dict):
        # model.init_from and a backbone's weights file: beside the config, no fallback.
        init_from = model.get("init_from")
        if isinstance(init_from, str) and init_from.strip() and not _is_url(init_from):
            model["init_from"] = os.path.normpath(base / os.path.expanduser(model["init_from"]))
        backbone = model.get("backbone")
        if (
            isinstance(backbone, dict)
            and isinstance(backbone.get("weights"), str)
            and backbone["weights"] not in ("imagenet", "none")
            and backbone["weights"].strip()
        ):
            backbone["weights"] = os.path.normpath(base / os.path.expanduser(backbone["weights"]))
    section = raw.get("data")
    if not isinstance(section, dict):
        return
    for f in dataclasses.fields(DataConfig):
        value = section.get(f.name)
        if f.metadata.get("kind") != "path" or not isinstance(value, str) or not value.strip():
            continue
        if _is_url(value):
            continue  # s3://, gs://: cnnclf/storage reads it
        expanded = os.path.expanduser(value)
        if os.path.isabs(expanded):
            section[f.name] = expanded
            continue
        # Absolute: an error naming the folder then says where it was looked for.
        beside = os.path.abspath(base / expanded)
        if (
            not os.path.exists(beside)
            and os.path.exists(expanded)
            and base.resolve() != Path.cwd().resolve()
        ):
            import logging

            hint = os.path.relpath(os.path.abspath(expanded), base.resolve())
            logging.getLogger("cnnclf").warning(
                "warning: data.%s: %s is not in the config's folder %s but is in the working "
                "directory; relative paths in a config are resolved from its own folder: "
                "write %s",
                f.name,
                value,
                base,
                hint,
            )
            continue
        section[f.name] = beside
