"""Writing configs out: the resolved config (`cnnclf config`, a bundle's config.yaml), the
commented reference config made from the schema's help texts, and the list of its keys.
"""

from __future__ import annotations

import dataclasses

import yaml

from cnnclf.config.defaults import Implied
from cnnclf.config.schema import SCRATCH_ONLY, SECTIONS, Config
from cnnclf.config.yaml_io import ConfigDumper, flow_yaml


def dump_config(config: Config) -> str:
    """The resolved config as YAML, loadable again by `load_config`.

    A backbone config leaves out the keys that only describe the from-scratch model, which
    `parse_config` refuses beside model.backbone.
    """
    data = config.to_dict()
    if config.model.backbone:
        for key in SCRATCH_ONLY:
            section, name = key.split(".")
            data[section].pop(name)
    return yaml.dump(data, Dumper=ConfigDumper, sort_keys=False, default_flow_style=None)


def implied_comments(implied: list[Implied]) -> str:
    """One YAML comment line per implied default (see defaults.py), or "" when none.

    Keys that dump_config leaves out beside a backbone (SCRATCH_ONLY) are not mentioned: a
    comment about a key the YAML below it does not show would only confuse.
    """
    return "".join(change.comment() + "\n" for change in implied if change.key not in SCRATCH_ONLY)


def reference_yaml() -> str:
    """The fully commented reference config: every key, its type, default and meaning."""
    lines = [
        "# cnnclf reference config: every key, with its type, default and meaning.",
        "# Generated from cnnclf/config/schema.py "
        "(cnnclf config --reference > configs/reference.yaml);",
        "# tests fail if the two disagree. Copy what you need: omitted keys take these defaults.",
        "# Relative paths are resolved from this file's folder (--set values: from the",
        "# directory you run cnnclf in).",
        "# Any key can be overridden on the command line: --set section.key=value",
        "",
    ]
    for section, cls in SECTIONS.items():
        lines.append(f"{section}:  # {(cls.__doc__ or '').strip()}")
        defaults = dataclasses.asdict(cls())
        for f in dataclasses.fields(cls):
            value = "1/255" if f.name == "rescale" else flow_yaml(defaults[f.name])
            lines.append(f"  {f.name}: {value}  # {f.metadata['kind']}: {f.metadata['help']}")
            if f.metadata["sub_section"] is not None:
                lines += _sub_section_lines(f.metadata["sub_section"])
        lines.append("")
    return "\n".join(lines)


def _sub_section_lines(cls: type) -> list[str]:
    """The keys of a sub-section, as comments under the key that holds it."""
    lines = []
    for f in dataclasses.fields(cls):
        default = "required" if f.metadata["required"] is not None else flow_yaml(f.default)
        lines.append(f"    #   {f.name}: {default}  ({f.metadata['kind']}) {f.metadata['help']}")
    return lines


def schema_keys() -> list[str]:
    """Every `section.key` the schema knows, in order."""
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
