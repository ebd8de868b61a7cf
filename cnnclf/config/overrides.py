"""`--set section.key=value`: command-line overrides, applied to the raw mapping before it is
validated, so an override is checked exactly like the same key written in the file.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import yaml

from cnnclf.config.checks import shown
from cnnclf.config.parse import check_value
from cnnclf.config.schema import SECTIONS
from cnnclf.config.subsections import SubSection
from cnnclf.config.yaml_io import load_yaml
from cnnclf.errors import ConfigError


def apply_override(raw: dict, override: str) -> None:
    """Sets `section.key=value` (list items by index: `model.conv_blocks.0.filters=64`) in place."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"--set {override!r}: must look like section.key=value, e.g. train.epochs=3"
        )
    try:
        value = load_yaml(text, f"--set {key}", key=key, lines=False) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: value {shown(text)} is not valid YAML") from None
    parts = key.split(".")
    if len(parts) < 2:
        raise ConfigError(f"--set {key}: name a key inside a section, e.g. train.{key}")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        here = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_list_index(here, part, node)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {here} is not a section")
        current = node.get(part)
        mapping = _mapping_field(parts[0], part) if i == 1 else None
        if mapping is not None and not isinstance(current, (dict, list)):
            # A key whose value is a mapping, given here as off (null, false) or in short
            # (`backbone: resnet50_v2`, `early_stopping: true`): its own check spells it out,
            # so `--set model.backbone.trainable=true` sets a key inside it.
            expanded = check_value(mapping, here, current) if current is not None else None
            if isinstance(expanded, SubSection):
                expanded = expanded.to_dict()
            node[part] = copy.deepcopy(expanded) if isinstance(expanded, dict) else {}
        elif current is None:
            # A key left at its default (e.g. a list): start from the default value.
            node[part] = _default_at(parts[:2]) if i == 1 else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(key, last, node)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])} is not a section")


def _list_index(key: str, part: str, node: list) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {key}: {part!r} is not an index of a list of {len(node)} items")
    return int(part)


def _mapping_field(section: str, name: str) -> dataclasses.Field | None:
    """The schema field `section.name` when its value can be a mapping, else None."""
    cls = SECTIONS.get(section)
    fields = dataclasses.fields(cls) if cls is not None else ()
    return next((f for f in fields if f.name == name and _is_mapping(f)), None)


def _is_mapping(f: dataclasses.Field) -> bool:
    """A sub-section (model.backbone, ...) or a plain mapping (train.class_weight)."""
    if f.metadata["sub_section"] is not None:
        return not f.metadata["many"]
    return "dict" in str(f.type)


def _default_at(parts: list[str]) -> Any:
    section, name = parts[0], parts[1]
    if section not in SECTIONS:
        raise ConfigError(f"--set {'.'.join(parts)}: unknown section {section!r}")
    obj = SECTIONS[section]()
    if not hasattr(obj, name):
        return {}
    return dataclasses.asdict(obj)[name]
