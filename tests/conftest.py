"""Fixtures made by code: tiny class-folder trees and trained bundles, small and fast.

The plain functions that make them (and that tests call directly) live in helpers.py.

Tiers: a test that trains a model, kills a process, starts a server or imports TensorFlow (in
this process or in a subprocess) is marked `slow`, visibly, at the test or with a module's
`pytestmark`. `pytest -m "not slow"` is the fast tier (config, data, store, rundir, metrics,
rendering, CLI errors); plain `pytest` runs everything, as CI does. Two checks keep the marks
honest: a test that asks for a fixture that trains (TRAINING_FIXTURES) must be marked slow, and a
fast test that imports TensorFlow fails, naming the mark it lacks.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest
from helpers import make_tree, train_bundle

# No test may download anything: a backbone's ImageNet weights that are not in Keras' cache
# are then an error (tested), never a download. Subprocesses inherit this.
os.environ["CNNCLF_OFFLINE"] = "1"

# Fixtures that train a model (here and in test modules). pytest lists a test's fixtures with
# those they depend on, so a fixture built on one of these (an export, a served client) counts.
TRAINING_FIXTURES = {
    "binary_bundle",
    "multi_bundle",
    "confident_bundle",
    "demo_bundle",
    "scratch_bundle",
    "source_bundle",
}


def pytest_collection_modifyitems(config, items):
    unmarked = [
        item.nodeid
        for item in items
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests use a fixture that trains a model but are not marked slow "
            "(add @pytest.mark.slow or the module's pytestmark): " + ", ".join(unmarked)
        )


def _tensorflow_loaded() -> bool:
    return "tensorflow" in sys.modules or "keras" in sys.modules


_IMPORTED_TENSORFLOW: list[str] = []  # test modules whose import imported TensorFlow


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    before = _tensorflow_loaded()
    report = yield
    if not before and _tensorflow_loaded() and isinstance(collector, pytest.Module):
        _IMPORTED_TENSORFLOW.append(collector.nodeid)
    return report


def pytest_collection_finish(session):
    # Importing a test module happens even when -m "not slow" deselects all of its tests: one
    # that imports TensorFlow at module level costs the fast tier seconds per worker, and
    # hides any fast test that imports it too (the check below only sees a new import).
    if _IMPORTED_TENSORFLOW and any(
        item.get_closest_marker("slow") is None for item in session.items
    ):
        warnings.warn(
            pytest.PytestWarning(
                f"{', '.join(_IMPORTED_TENSORFLOW)} imported TensorFlow while being collected; "
                "import it inside the tests or fixtures that use it"
            ),
            stacklevel=1,
        )


@pytest.fixture(autouse=True)
def _fast_tests_stay_without_tensorflow(request):
    """A test outside the slow tier must not import TensorFlow or Keras (seconds per worker)."""
    before = _tensorflow_loaded()
    yield
    if before or request.node.get_closest_marker("slow") is not None:
        return
    loaded = [name for name in ("tensorflow", "keras") if name in sys.modules]
    if loaded:
        pytest.fail(
            f"{request.node.nodeid} imported {' and '.join(loaded)}: mark it "
            "@pytest.mark.slow, or keep TensorFlow out of the code it runs"
        )


@pytest.fixture(scope="session")
def binary_tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("binary"), n_classes=2)


@pytest.fixture(scope="session")
def multi_tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("multi"), n_classes=3)


@pytest.fixture(scope="session")
def binary_bundle(tmp_path_factory, binary_tree) -> Path:
    return train_bundle(tmp_path_factory.mktemp("binary_run"), binary_tree)


@pytest.fixture(scope="session")
def multi_bundle(tmp_path_factory, multi_tree) -> Path:
    return train_bundle(tmp_path_factory.mktemp("multi_run"), multi_tree)
