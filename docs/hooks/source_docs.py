"""MkDocs hook: parts of the design notes generated from the source, so they cannot drift.

Two markers are replaced when a page is built; the source is read with `ast`, nothing is
imported, so the build needs no TensorFlow.

`<!-- docstring: cnnclf/path/module.py -->` becomes that module's docstring, as Markdown (its
indented diagrams become code blocks).

`<!-- package-map -->` becomes one table per sub-package:

- each module's summary is its docstring's first paragraph;
- "TensorFlow at import" says whether importing the module loads TensorFlow, Keras or an
  exported-model runtime, directly or through the cnnclf modules it imports at module level
  (imports inside functions and under `if TYPE_CHECKING:` do not count: that is the point).

It also teaches mkdocs-click click's `\\b` marker: click prints the lines after it as they
are (the commands' examples); mkdocs-click would pass them on as a paragraph and Markdown
would run them into one line. They become a code block instead.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

MARKER = "<!-- package-map -->"
DOCSTRING = re.compile(r"<!-- docstring: (\S+) -->")
PACKAGE = "cnnclf"
# What makes an import heavy: TensorFlow itself, Keras (which loads its backend), and the
# runtimes of exported models.
HEAVY = ("tensorflow", "keras", "tf2onnx", "onnxruntime", "ai_edge_litert", "tf_keras")
# Sub-packages in the order data flows through them, then the ones around them.
ORDER = ("config", "data", "model", "training", "bundle", "inference", "serve", "cli")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """Modules imported when this module is imported (module level, try/if blocks included)."""
    found: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
    return found


def _summary(tree: ast.Module) -> str:
    doc = ast.get_docstring(tree) or ""
    paragraph = doc.strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines()).replace("|", "\\|")


def package_map(root: Path) -> str:
    source = root / PACKAGE
    modules: dict[str, dict] = {}
    for path in sorted(source.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        name = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules[name] = {
            "path": path.relative_to(root).as_posix(),
            "summary": _summary(tree),
            "imports": _top_level_imports(tree, name, path.name == "__init__.py"),
        }

    def parents(name: str) -> list[str]:
        parts = name.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts))]

    def direct(name: str) -> str | None:
        heavy = sorted({d.split(".")[0] for d in modules[name]["imports"]} & set(HEAVY))
        return heavy[0] if heavy else None

    def heavy(name: str) -> str | None:
        """The heavy module importing `name` loads, or None: a search of everything importing
        it runs (its module-level imports and, for a.b.c, a/__init__ and a/b/__init__ first)."""
        seen, pending = {name}, [name]
        while pending:
            current = pending.pop()
            found = direct(current)
            if found:
                return found
            for dependency in sorted(modules[current]["imports"]) + parents(current):
                if dependency in modules and dependency not in seen:
                    seen.add(dependency)
                    pending.append(dependency)
        return None

    groups: dict[str, list[str]] = {}
    for name in modules:
        parts = name.split(".")
        is_subpackage = len(parts) > 1 and (source / parts[1]).is_dir()
        groups.setdefault(parts[1] if is_subpackage else "", []).append(name)
    ordered = [g for g in ORDER if g in groups] + sorted(g for g in groups if g and g not in ORDER)
    out = []
    for group in ["", *ordered]:
        if group not in groups:
            continue
        title = f"`{PACKAGE}/{group}/`" if group else f"`{PACKAGE}/` (top level)"
        out += [f"### {title}", "", "| module | what it is | TensorFlow at import |"]
        out += ["| --- | --- | --- |"]
        for name in groups[group]:
            loads = heavy(name)
            verdict = f"**yes** (`{loads}`)" if loads else "no"
            out.append(f"| `{modules[name]['path']}` | {modules[name]['summary']} | {verdict} |")
        out.append("")
    return "\n".join(out)


def docstring(path: Path) -> str:
    """A module's docstring as Markdown: a blank line before each indented block, so an
    example or diagram introduced by "...:" on the line above becomes a code block."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    lines: list[str] = []
    for line in doc.splitlines():
        if line.startswith("    ") and lines and lines[-1] and not lines[-1].startswith("    "):
            lines.append("")
        lines.append(line)
    return "\n".join(lines)


def _keep_click_examples(lines):
    """A `\\b` paragraph of a click help text (lines click must not rewrap) as a code block."""
    out, verbatim = [], False
    for line in lines:
        if line.strip() == "\b":
            out.append("```text")
            verbatim = True
        elif verbatim and not line.strip():
            out += ["```", ""]
            verbatim = False
        else:
            out.append(line[2:] if verbatim and line.startswith("  ") else line)
    if verbatim:
        out.append("```")
    return out


def on_startup(command, dirty) -> None:
    # mkdocs-click has no option for this; its description helper is wrapped where it exists,
    # and left alone (plain paragraphs, nothing worse) if a later version renames it.
    try:
        from mkdocs_click import _docs
    except ImportError:
        return
    describe = getattr(_docs, "_make_description", None)
    if describe is None or getattr(describe, "keeps_click_examples", False):
        return

    def make_description(*args, **kwargs):
        yield from _keep_click_examples(list(describe(*args, **kwargs)))

    make_description.keeps_click_examples = True  # type: ignore[attr-defined]
    _docs._make_description = make_description


def on_page_markdown(markdown: str, page, config, files) -> str:
    root = Path(config["config_file_path"]).parent
    markdown = DOCSTRING.sub(lambda m: docstring(root / m.group(1)), markdown)
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, package_map(root))
    return markdown
