"""Validating a raw mapping (as read from YAML) into a `Config`, before any work starts.

One parser serves sections and sub-sections alike: unknown keys are refused with a did-you-mean
hint, each given key goes through its field's checker, and every error names the full key path
(`model.conv_blocks[1].filters: is required ...`). The order is fixed: sections, then the
pretrained-model rules, then implied defaults (defaults.py), then the checks across sections.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Collection
from typing import Any, cast

from cnnclf.config.checks import fail, key_name
from cnnclf.config.cross_checks import check_across_sections, check_pretrained_keys
from cnnclf.config.defaults import Implied, apply_implied_defaults, expand_shorthand
from cnnclf.config.schema import SECTIONS, Config
from cnnclf.config.subsections import SubSection
from cnnclf.errors import ConfigError


def parse_config(raw: dict) -> Config:
    """Validates a raw mapping (as read from YAML) against the schema."""
    return parse_config_explained(raw)[0]


def parse_config_explained(raw: dict) -> tuple[Config, list[Implied]]:
    """As `parse_config`, with the implied defaults it applied (see defaults.py)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: must be a mapping, got {type(raw).__name__}")
    reject_unknown("config", raw, SECTIONS, top_level=True)
    sections, given = {}, set()
    for name, cls in SECTIONS.items():
        section_raw = raw.get(name) or {}
        if not isinstance(section_raw, dict):
            raise ConfigError(f"{name}: must be a mapping of keys, got {section_raw!r}")
        reject_unknown(name, section_raw, _field_names(cls))
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in section_raw:
                values[f.name] = check_value(f, f"{name}.{f.name}", section_raw[f.name])
                given.add(f"{name}.{f.name}")
        sections[name] = cls(**values)
    config = Config(**sections)
    check_pretrained_keys(config, given)
    config, implied = apply_implied_defaults(config, given)
    check_across_sections(config)
    return config, implied


def check_value(f: dataclasses.Field, key: str, value: Any) -> Any:
    """`value` checked and normalised for field `f`, named `key` in errors."""
    cls = f.metadata["sub_section"]
    if cls is None:
        return f.metadata["check"](key, value)
    if f.metadata["many"]:
        if not isinstance(value, list) or not value:
            fail(key, cls.allowed_list(), value)
        return [
            parse_sub_section(cls, f"{key}[{i}]", item, optional=False)
            for i, item in enumerate(value)
        ]
    return parse_sub_section(cls, key, value)


def parse_sub_section(cls: type, key: str, value: Any, *, optional: bool = True) -> Any:
    """A sub-section (subsections.py) from its raw value, shorthands expanded; None when off."""
    value = expand_shorthand(cls, value)
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        fail(key, cast("type[SubSection]", cls).allowed(), value)
    reject_unknown(key, value, _field_names(cls))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in fields.items():
        if name not in value and f.metadata["required"] is not None:
            words = f.metadata["required"]
            raise ConfigError(f"{key}.{name}: is required{words() if callable(words) else words}")
    # Values are checked in the order the sub-section names (its fields' order unless it says
    # otherwise), so a config wrong in two places is told about the same one as before.
    order = getattr(cls, "check_order", None) or tuple(fields)
    values = {
        name: check_value(fields[name], f"{key}.{name}", value[name])
        for name in order
        if name in value
    }
    return cls(**values)


def reject_unknown(
    where: str, raw: dict, known: Collection[str], *, top_level: bool = False
) -> None:
    """Refuses a key `known` lacks, suggesting the closest known key or the section it is in."""
    for key in raw:
        if key in known:
            continue
        path = key_name(key) if top_level else f"{where}.{key_name(key)}"
        hint = difflib.get_close_matches(str(key), list(known), n=1)
        if not hint and not top_level:
            # A key put in the wrong section is a common slip: say where it belongs.
            for section, cls in SECTIONS.items():
                if key in _field_names(cls):
                    hint = [f"{section}.{key}"]
        suggestion = (
            f"; did you mean {hint[0]!r}?" if hint else (f"; known keys: {', '.join(known)}")
        )
        raise ConfigError(f"{path}: unknown key{suggestion}")


def _field_names(cls: type) -> dict[str, None]:
    """The field names of `cls`, in order (a dict: ordered, and fast to look up)."""
    return {f.name: None for f in dataclasses.fields(cls)}
