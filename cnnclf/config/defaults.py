"""The two ways a config means more than it says: shorthands and implied defaults.

Shorthands are how a sub-section may be written in short; `expand_shorthand` spells them out,
for config files and --set alike:

    model.backbone: resnet50_v2       ->  {name: resnet50_v2}
    train.early_stopping: true        ->  {} (every key at its default)
    train.early_stopping: false       ->  null (off)
    train.fine_tune: false            ->  null (off)
    model.conv_blocks: [32, ...]      ->  [{filters: 32}, ...]

Implied defaults are keys whose default depends on another key: a backbone brings its own
input size, pooling and input scaling. `apply_implied_defaults` changes them in one step and
returns what it changed, so `cnnclf config` can say so rather than rewrite them silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cnnclf.config.schema import Config
from cnnclf.config.subsections import (
    BackboneConfig,
    ConvBlock,
    EarlyStoppingConfig,
    FineTuneConfig,
)
from cnnclf.config.yaml_io import flow_yaml


def expand_shorthand(cls: type, value: Any) -> Any:
    """The long form of a value given for sub-section `cls`: a mapping, or None for off.

    Anything that is no shorthand comes back unchanged, for the parser to check (and refuse).
    """
    if cls is BackboneConfig and isinstance(value, str):
        return {"name": value}
    if cls is EarlyStoppingConfig and value is True:
        return {}
    if cls in (EarlyStoppingConfig, FineTuneConfig) and value is False:
        return None
    if cls is ConvBlock and isinstance(value, int) and not isinstance(value, bool):
        return {"filters": value}
    return value


@dataclass(frozen=True)
class Implied:
    """One key changed because another key implies it."""

    key: str  # "data.image_size"
    value: Any  # what it is now
    was: Any  # its default before
    by: str  # the key that implies it: "model.backbone"

    def comment(self) -> str:
        """`# model.backbone implies data.image_size: [224, 224] (was [64, 64])`."""
        return (
            f"# {self.by} implies {self.key}: {flow_yaml(self.value)} (was {flow_yaml(self.was)})"
        )


def implied_defaults(config: Config, given: set[str]) -> list[Implied]:
    """What `config`'s model.backbone changes among the keys the user did not set.

    Args:
        config: a config whose sections are each valid.
        given: the `section.key`s the file or --set gave.

    Returns:
        The changes, empty without a backbone: data.image_size becomes the backbone's ImageNet
        size, model.pooling global_average (a backbone's feature map is large to flatten), and
        augment.rescale 1.0 (the backbone scales its own input inside the model).
    """
    if config.model.backbone is None:
        return []
    from cnnclf.model.backbones import BACKBONES

    spec = BACKBONES[config.model.backbone.name]
    wanted = {
        "data.image_size": [spec.default_size, spec.default_size],
        "model.pooling": "global_average",
        "augment.rescale": 1.0,
    }
    changes = []
    for key, value in wanted.items():
        section, name = key.split(".")
        was = getattr(getattr(config, section), name)
        if key not in given and was != value:
            changes.append(Implied(key, value, was, "model.backbone"))
    return changes


def apply_implied_defaults(config: Config, given: set[str]) -> tuple[Config, list[Implied]]:
    """`config` with its implied defaults applied, and the changes made (see `implied_defaults`)."""
    changes = implied_defaults(config, given)
    for change in changes:
        section, name = change.key.split(".")
        replaced = dataclasses.replace(getattr(config, section), **{name: change.value})
        config = dataclasses.replace(config, **{section: replaced})
    return config, changes
