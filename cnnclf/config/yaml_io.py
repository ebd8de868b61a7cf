"""Reading and writing config YAML, hardened: config files and --set values go through the same
loader, so a value means the same thing in both places.

The loader is `yaml.SafeLoader` with YAML 1.2 floats (`3e-4` is a number), and it refuses what
no config needs: duplicate keys, documents over MAX_CONFIG_BYTES, more than MAX_YAML_NODES values
(counting aliases as often as used) and nesting deeper than MAX_YAML_DEPTH. The dumper quotes
strings the loader would read as numbers, so a written config reads back the same.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from cnnclf.config.checks import key_name
from cnnclf.config.schema import SECTIONS
from cnnclf.errors import ConfigError
from cnnclf.regular_file import FileTooLarge, NotRegularFile, read_regular_file

# Bounds on what a config may be, so that no input keeps the pure-Python parser busy: it is
# slow on large inputs, and nesting costs quadratically. The reference config is a few KB,
# about 100 values, 3 levels deep: these leave ample room.
MAX_CONFIG_BYTES = 100_000
MAX_YAML_NODES = 10_000  # values, counting each alias as often as it is used
MAX_YAML_DEPTH = 20

_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.2's floats: PyYAML follows YAML 1.1, where a float needs a dot, so `3e-4` and `1E5`
# were read as strings. The last three forms are YAML 1.1's, kept as PyYAML reads them.
_YAML12_FLOAT = re.compile(
    r"""^(?:
      [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    | [-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    | [-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    | [-+]?\.(?:inf|Inf|INF)
    | \.(?:nan|NaN|NAN)
)$""",
    re.X,
)


class ConfigLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` reading floats as YAML 1.2 does (`3e-4` is a number; `'3e-4'` a string),
    refusing nesting deeper than MAX_YAML_DEPTH and more than MAX_YAML_NODES nodes as it goes."""

    def __init__(self, text: str, source: str):
        super().__init__(text)
        self.source = source
        self.composed = 0

    def _refuse_deeper(self) -> None:
        if self.flow_level + len(self.indents) >= MAX_YAML_DEPTH:
            line = self.get_mark().line + 1
            raise ConfigError(
                f"{self.source}: line {line}: nested more than {MAX_YAML_DEPTH} "
                "levels deep, too deep for a config"
            )

    def fetch_flow_collection_start(self, token_class: type[yaml.Token]) -> None:  # `[` or `{`
        self._refuse_deeper()
        super().fetch_flow_collection_start(token_class)

    def add_indent(self, column: int) -> bool:
        # A block collection, unless at the current indentation.
        if self.indent < column:
            self._refuse_deeper()
        return super().add_indent(column)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.composed += 1
        if self.composed > MAX_YAML_NODES:
            raise _too_many_nodes(self.source)
        return super().compose_node(parent, index)


def _too_many_nodes(source: str) -> ConfigError:
    return ConfigError(
        f"{source}: more than {MAX_YAML_NODES} values, counting each use of an "
        "alias (an alias bomb?); a config has about 100"
    )


class ConfigDumper(yaml.SafeDumper):
    """`yaml.SafeDumper` that quotes strings `ConfigLoader` would read as numbers (`'1e5'`)."""


# The float resolver is swapped in place, keeping its position: resolvers are tried in order,
# and bool/float come before int, so the pattern must never match a plain integer.
for _yaml_class in (ConfigLoader, ConfigDumper):
    _yaml_class.yaml_implicit_resolvers = {
        first: [(tag, _YAML12_FLOAT if tag == _FLOAT_TAG else regexp) for tag, regexp in resolvers]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def load_yaml(text: str, source: str, *, key: str = "", lines: bool = True) -> Any:
    """Parses one YAML document, refusing what no config needs: duplicate keys, alias bombs.

    Args:
        text: the YAML.
        source: how errors name the text: "config file x.yaml" or "--set train.seed".
        key: the dotted key the text is the value of ("" for a whole file), to name nested keys.
        lines: whether errors give line numbers (not for a one-line --set value).

    Returns:
        The constructed value. Raises `ConfigError` for a refused document; YAML syntax errors
        propagate as `yaml.YAMLError` for the caller to word.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise _too_large(source)
    loader = ConfigLoader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        # Checked on the node graph, before anything is built: expanding a "billion laughs"
        # bomb (nested aliases) costs time and memory exponential in its size.
        _check_nodes(node, source, key, lines)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _too_large(source: str) -> ConfigError:
    return ConfigError(
        f"{source}: larger than {MAX_CONFIG_BYTES // 1000} KB, too large for a config"
    )


def _check_nodes(root: yaml.Node, source: str, key: str, lines: bool) -> None:
    """Refuses duplicate mapping keys and more than MAX_YAML_NODES values with aliases expanded.

    Walks the composed graph, where an alias is the very node it names, so a node reached
    through N aliases is counted N times: the count is what construction and validation would
    see, and the walk stops as soon as it passes the bound.
    """
    stack = [(root, key)]
    count = 1
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.SequenceNode):
            children = [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            children = []
            first_line: dict[tuple[str, Any], int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` adds, by design
                    children.append((value_node, path))
                    continue
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                shown = key_name(name)
                child = path if name is None else f"{path}.{shown}" if path else shown
                line = key_node.start_mark.line + 1
                if name is not None and (key_node.tag, name) in first_line:
                    where = f" line {line}:" if lines else ""
                    also = f" (first on line {first_line[key_node.tag, name]})" if lines else ""
                    raise ConfigError(f"{source}:{where} duplicate key {child}{also}; keep one")
                if name is not None:
                    first_line[key_node.tag, name] = line
                else:
                    children.append((key_node, path))
                children.append((value_node, child))
        else:
            continue
        count += len(children)
        if count > MAX_YAML_NODES:
            raise _too_many_nodes(source)
        stack.extend(children)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        # Read at most one byte past the cap: a huge file is refused unread, and a FIFO or a
        # device by its type, before a read that would wait for a writer or never end.
        data = read_regular_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except FileTooLarge:
        raise _too_large(f"config file {path}") from None
    except NotRegularFile as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        raw = load_yaml(text, f"config file {path}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path}:{where}: invalid YAML: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path}: must be a mapping with sections "
            f"{', '.join(SECTIONS)}, got a {type(raw).__name__}"
        )
    return raw


def flow_yaml(value: Any) -> str:
    """`value` as one line of YAML (`[224, 224]`, `global_average`), as config comments show it."""
    text = yaml.dump(value, Dumper=ConfigDumper, default_flow_style=True).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    return text.removesuffix("...").strip()
