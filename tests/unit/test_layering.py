"""Import layering: the TensorFlow-free rooms never import TensorFlow or Keras at module level.

`cnnclf --help`, config validation, check-data and the bundle's format must start instantly and
run where TensorFlow is not installed; TensorFlow is imported inside the functions that need it
(STYLE.md). Two checks, each able to fail on its own:

- a static one: each room's module-level imports (inside top-level `if`/`try`/`with` and class
  bodies too; not inside functions or `if TYPE_CHECKING:`), followed through cnnclf's own
  modules, never reach a heavy package; a failure prints the chain of imports that does;
- a real one: a fresh interpreter imports every room and finds no heavy package in sys.modules.

The checker is itself tested on a small synthetic package, so a checker that finds nothing
cannot pass for a clean tree.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # holds the cnnclf package
HEAVY = ("tensorflow", "keras", "tf_keras")

# The TensorFlow-free rooms. "pkg.*" is the package and every module in it; a module that does
# not exist (yet) is skipped, so the table can name a room before it is written.
TF_FREE_ROOMS = {
    "cnnclf.config.*": "the whole config is validated before any work starts",
    "cnnclf.storage.*": "a bucket's errors come before TensorFlow loads; fsspec only when used",
    "cnnclf.errors": "every room raises these",
    "cnnclf.data.layout": "check-data and --help discover class folders without TensorFlow",
    "cnnclf.data.listing": "the one walk over image files, for check-data, predict and the decoder",
    "cnnclf.data.decode": "the one decoder: predict from an export, serve, check-data",
    "cnnclf.data.store": "the decoded-image store is plain files and NumPy",
    "cnnclf.data.check": "`cnnclf check-data` runs without TensorFlow installed",
    "cnnclf.data.label_files": "a bad label file is one line before TensorFlow loads",
    "cnnclf.data.check_labels": "check-data reports on label files without TensorFlow",
    "cnnclf.bundle": "reading a bundle's manifest needs no model",
    "cnnclf.bundle.format": "the bundle's format, in one place",
    "cnnclf.bundle.reader": "validating a bundle before loading its model",
    "cnnclf.training.rundir": "the run directory's state machine, tested by killing it",
    "cnnclf.model.backbones": "the BACKBONES table, read by config validation",
    "cnnclf.cli.*": "`cnnclf --help` and every usage error start instantly",
}


# ------------------------------------------------------------------------------------------
# The checker.


def module_path(root: Path, name: str) -> Path | None:
    """The file of module `name` under `root` (a package's __init__.py), or None."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def expand_rooms(root: Path, rooms) -> list[str]:
    """Module names for table entries; "pkg.*" becomes the package and all its modules."""
    names = []
    for room in rooms:
        if room.endswith(".*"):
            package = room[:-2]
            folder = root.joinpath(*package.split("."))
            names += [package] if (folder / "__init__.py").is_file() else []
            names += sorted(
                f"{package}.{path.stem}"
                for path in folder.glob("*.py")
                if path.stem not in ("__init__", "__main__")
            )
        elif module_path(root, room) is not None:
            names.append(room)
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _module_level_imports(body: list[ast.stmt]):
    """Import statements that run when the module is imported."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level_imports(block)
            for handler in node.handlers:
                yield from _module_level_imports(handler.body)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _module_level_imports(node.body)


def imported_modules(root: Path, name: str) -> list[str]:
    """Full names of the modules that importing `name` imports directly, in source order.

    `import a.b.c` and `from a.b import c` count a, a.b and a.b.c (a package runs its
    __init__ first); relative imports are resolved against `name`.
    """
    path = module_path(root, name)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in _module_level_imports(tree.body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            targets = [base] + [
                f"{base}.{alias.name}"
                for alias in node.names
                if module_path(root, f"{base}.{alias.name}") is not None
            ]
        for target in targets:
            parts = target.split(".")
            found += [".".join(parts[: i + 1]) for i in range(len(parts))]
    return list(dict.fromkeys(found))


def heavy_import_chains(root: Path, start: str, package: str = "cnnclf") -> list[list[str]]:
    """Each chain of module-level imports from `start` to a heavy package, shortest first.

    Modules of `package` found under `root` are followed; anything else is a leaf.
    """
    parents: dict[str, str | None] = {start: None}
    queue, chains = [start], []
    while queue:
        current = queue.pop(0)
        for target in imported_modules(root, current):
            heavy = target.split(".")[0] in HEAVY
            target = target.split(".")[0] if heavy else target  # keras.ops is keras
            if target in parents:
                continue
            parents[target] = current
            if heavy:
                chain, step = [target], current
                while step is not None:
                    chain.append(step)
                    step = parents[step]
                chains.append(chain[::-1])
            elif target.split(".")[0] == package and module_path(root, target) is not None:
                queue.append(target)
    return chains


def heavy_modules_after_import(modules: list[str], pythonpath: Path) -> list[str]:
    """The heavy packages in sys.modules after a fresh interpreter imports `modules`."""
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=pythonpath,
            env={**os.environ, "PYTHONPATH": str(pythonpath)},
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"waited 300 s for a fresh interpreter to import {modules}")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


# ------------------------------------------------------------------------------------------
# The rooms.

ROOM_MODULES = expand_rooms(ROOT, TF_FREE_ROOMS)


def test_the_table_names_modules_that_exist():
    for room in TF_FREE_ROOMS:
        if room.endswith(".*"):
            assert module_path(ROOT, room[:-2]) is not None, f"{room}: no such package"
    assert {"cnnclf.config", "cnnclf.errors", "cnnclf.cli", "cnnclf.data.layout"} <= set(
        ROOM_MODULES
    )


@pytest.mark.parametrize("module", ROOM_MODULES)
def test_a_tensorflow_free_room_never_imports_tensorflow_at_module_level(module):
    chains = heavy_import_chains(ROOT, module)
    assert not chains, (
        f"{module} must not import TensorFlow or Keras at module level; import it inside the "
        "function that needs it. Import chains:\n"
        + "\n".join("  " + " -> ".join(chain) for chain in chains)
    )


def test_importing_every_room_leaves_tensorflow_and_keras_unloaded():
    assert heavy_modules_after_import(ROOM_MODULES, ROOT) == []


# ------------------------------------------------------------------------------------------
# The checker on a synthetic package: it must catch what it is there to catch.


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return root


@pytest.fixture
def synthetic(tmp_path) -> Path:
    """pkg.room is clean itself but reaches keras through pkg.util; a fake tensorflow too."""
    return write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/room.py": """
                from __future__ import annotations
                from typing import TYPE_CHECKING
                from . import util
                if TYPE_CHECKING:
                    import tensorflow  # never runs
                def build():
                    import tensorflow  # runs only when called
                """,
            "pkg/util.py": """
                try:
                    from pkg.deep import helper
                except ImportError:
                    helper = None
                """,
            "pkg/deep.py": "import keras.ops as ops\nhelper = ops\n",
            "pkg/clean.py": "import json\nfrom pkg import errors\n",
            "pkg/errors.py": "class Error(Exception):\n    pass\n",
            # Stand-ins, so the real check below imports nothing heavy.
            "keras/__init__.py": "",
            "keras/ops.py": "",
            "tensorflow/__init__.py": "",
        },
    )


def test_the_checker_reports_the_chain_through_a_try_block(synthetic):
    chains = heavy_import_chains(synthetic, "pkg.room", package="pkg")
    assert chains == [["pkg.room", "pkg.util", "pkg.deep", "keras"]]


def test_the_checker_ignores_imports_in_functions_and_type_checking(synthetic):
    (synthetic / "pkg" / "util.py").write_text("import os\n")
    assert heavy_import_chains(synthetic, "pkg.room", package="pkg") == []
    assert heavy_import_chains(synthetic, "pkg.clean", package="pkg") == []


def test_the_checker_sees_a_relative_import_of_a_heavy_sibling(synthetic):
    (synthetic / "pkg" / "clean.py").write_text("if True:\n    from .deep import helper\n")
    assert heavy_import_chains(synthetic, "pkg.clean", package="pkg") == [
        ["pkg.clean", "pkg.deep", "keras"]
    ]


def test_the_real_import_check_sees_a_heavy_import(synthetic):
    assert heavy_modules_after_import(["pkg.clean"], synthetic) == []
    assert heavy_modules_after_import(["pkg.room"], synthetic) == ["keras"]


def test_expand_rooms_lists_a_package_and_its_modules(synthetic):
    assert expand_rooms(synthetic, ["pkg.*", "pkg.missing", "pkg.errors"]) == [
        "pkg",
        "pkg.clean",
        "pkg.deep",
        "pkg.errors",
        "pkg.room",
        "pkg.util",
        "pkg.errors",
    ]
