"""Decoded images are kept between epochs (memory or disk) without changing what is trained."""

from pathlib import Path

import numpy as np
import pytest

from cnnclf.decoded import DecodedStore
from cnnclf.images import ImageSpec
from conftest import make_tree, read_json, run_cli, write_config


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_images_come_from_the_store_after_the_first_read(tmp_path, where):
    tree = make_tree(tmp_path / "data", n_train=3, with_test=False)
    paths = sorted(str(p) for p in (tree / "training_set").rglob("*.*"))
    store = DecodedStore(paths, ImageSpec((16, 16)), where, str(tmp_path / "store.bin"))
    first = [store.read(i) for i in range(len(paths))]
    for path in paths:  # the sources are gone: only the store can answer now
        Path(path).unlink()
    again = [store.read(i) for i in range(len(paths))]
    assert all(ok for _, ok in first + again)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(first, again))
    assert first[0][0].shape == (16, 16, 3) and first[0][0].dtype == np.uint8


def test_without_a_store_every_read_decodes(tmp_path):
    tree = make_tree(tmp_path / "data", n_train=1, with_test=False)
    paths = sorted(str(p) for p in (tree / "training_set").rglob("*.*"))
    store = DecodedStore(paths, ImageSpec((16, 16)), "none")
    assert store.read(0)[1]
    Path(paths[0]).unlink()
    assert not store.read(0)[1]


def test_an_unreadable_file_is_reported_once_and_dropped(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    reported = []
    store = DecodedStore([str(broken)], ImageSpec((16, 16)), "memory",
                         on_unreadable=lambda path, reason: reported.append(path))
    assert [store.read(0)[1] for _ in range(3)] == [False, False, False]
    assert reported == [str(broken)]


def test_every_cache_mode_trains_on_the_same_images(tmp_path, binary_tree):
    losses = {}
    for cache in ("memory", "disk", "none"):
        config = write_config(tmp_path / f"{cache}.yaml", binary_tree,
                              data={"train_dir": str(binary_tree / "training_set"),
                                    "test_dir": str(binary_tree / "test_set"),
                                    "image_size": [16, 16], "batch_size": 8, "cache": cache},
                              train={"epochs": 2, "seed": 3, "deterministic": True})
        result = run_cli("train", "--config", config, "--out", tmp_path / cache)
        assert result.exit_code == 0, result.output
        assert f"cache: {cache}" in result.stderr
        losses[cache] = read_json(tmp_path / cache / "history.json")["loss"]
    assert losses["memory"] == losses["disk"] == losses["none"]
