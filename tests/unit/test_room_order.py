"""Import direction: a room imports only rooms below it in the stages' order.

data → model → training → bundle → inference reads as a pipeline, and a reader finds a
decision by following imports downwards. An import the other way (the bundle writer reaching
into training for a fault point, as it once did) ties two rooms into one. Every import counts
here, at module level or inside a function, since a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "cnnclf"

# Lowest first: a room may import its own modules and any room before it in this list.
ORDER = [
    ("", "the package root: __version__, errors, tf_loader (used everywhere)"),
    ("config", "the schema and its checks"),
    ("storage", "s3://, gs:// URLs turned into local paths; bundles uploaded marker last"),
    ("data", "files, decoding, the store, the pipeline"),
    ("bundle", "the bundle's format: read, write, export"),
    ("model", "building, backbones, transfer (init_from reads a bundle)"),
    ("inference", "predict, evaluate, explain, metrics, plots, summaries"),
    ("training", "the run, the Trainer, callbacks, the run directory"),
    ("tuning", "cnnclf tune: sweeps of training runs shared through an Optuna study"),
    ("review", "K-fold review: label issues, duplicates, the gallery, decisions"),
    ("serve", "the web page and REST API"),
    ("cli", "the command line, over all of them"),
]
RANK = {room: i for i, (room, _) in enumerate(ORDER)}

# Imports that point upwards on purpose: (importing room, imported module) -> why.
ALLOWED_UPWARDS = {
    ("config", "cnnclf.model.backbones"): "config validates backbone names against the table",
    ("config", "cnnclf.inference.thresholds"): "config validates a threshold rule's syntax",
    ("bundle", "cnnclf.model.backbones"): "export reads which backbones ONNX cannot convert",
    ("bundle", "cnnclf.inference.plots"): "the bundle holds a training-curves PNG",
}


def room_of(module: str, package: Path = PACKAGE) -> str:
    if module == "cnnclf.__main__":
        return "cli"  # `python -m cnnclf` is the command line
    parts = module.split(".")
    if len(parts) < 2 or not (package / parts[1]).is_dir():
        return ""  # cnnclf itself, or a module directly in it
    return parts[1]


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def cnnclf_imports(path: Path, package: Path = PACKAGE):
    """(line, imported module) for every import of a cnnclf module in `path`.

    `from cnnclf.inference import plots` imports the module cnnclf.inference.plots.
    """
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "cnnclf" or node.module.startswith("cnnclf."):
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    parts = name.split(".")[1:]
                    is_module = package.joinpath(*parts).with_suffix(".py").is_file()
                    yield node.lineno, name if is_module else node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cnnclf."):
                    yield node.lineno, alias.name


def upward_imports(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        here = room_of(module_name(path, package), package)
        for line, target in cnnclf_imports(path, package):
            there = room_of(target, package)
            if RANK.get(there, 0) > RANK.get(here, 0) and (here, target) not in ALLOWED_UPWARDS:
                found.append(f"{path.relative_to(package.parent)}:{line}: {here} imports {target}")
    return found


def test_every_room_is_in_the_order():
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert rooms == set(RANK) - {""}, "add the new room to ORDER, where it belongs"


def test_no_room_imports_a_room_above_it():
    found = upward_imports()
    assert not found, "imports against the stages' order:\n" + "\n".join(found)


def test_the_check_finds_an_upward_import(tmp_path):
    package = tmp_path / "cnnclf"
    for room in ("data", "training"):
        (package / room).mkdir(parents=True)
        (package / room / "__init__.py").write_text("")
    (package / "data" / "store.py").write_text(
        "def f():\n    from cnnclf.training.rundir import fault_point\n"
    )
    (package / "training" / "run.py").write_text("from cnnclf.data import store\n")
    assert upward_imports(package) == [
        "cnnclf/data/store.py:2: data imports cnnclf.training.rundir"
    ]
