"""The mirror, against fsspec's in-memory file system: what is fetched, reused and removed."""

from __future__ import annotations

from pathlib import Path

import pytest

fsspec = pytest.importorskip("fsspec")

from cnnclf import storage  # noqa: E402
from cnnclf.storage import mirroring  # noqa: E402


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """A fresh memory:// "bucket" and a cache of this test's own."""
    monkeypatch.setenv(mirroring.CACHE_ENV, str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    root = f"/b{tmp_path.name}"
    for key in ("cat/1.png", "cat/2.jpg", "dog/3.png", "notes.txt"):
        fs.pipe_file(f"{root}/data/{key}", key.encode())
    yield fs, f"memory://{root.lstrip('/')}"
    fs.rm(root, recursive=True)


def test_is_url():
    assert storage.is_url("s3://bucket/key") and storage.is_url("gs://b")
    assert not storage.is_url("data/train") and not storage.is_url("C:\\data")
    assert not storage.is_url("file:///tmp/x") and not storage.is_url(None)


def test_objects_are_fetched_once_then_reused(bucket):
    _, url = bucket
    first = storage.MirrorStats()
    local = storage.mirror(f"{url}/data", stats=first)
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*.*"))
    assert [f for f in files if not f.startswith(".")] == ["cat/1.png", "cat/2.jpg", "dog/3.png"]
    assert (first.fetched, first.cached) == (3, 0)  # notes.txt: neither an image nor labels
    again = storage.MirrorStats()
    assert storage.mirror(f"{url}/data", stats=again) == local
    assert (again.fetched, again.cached, again.fetched_bytes) == (0, 3, 0)


def test_the_mirror_follows_changes_in_the_bucket(bucket):
    fs, url = bucket
    local = storage.mirror(f"{url}/data")
    root = url.removeprefix("memory://")
    fs.rm(f"/{root}/data/dog/3.png")
    fs.pipe_file(f"/{root}/data/cat/1.png", b"a new, longer version")
    stats = storage.MirrorStats()
    storage.mirror(f"{url}/data", stats=stats)
    assert (stats.fetched, stats.removed) == (1, 1)
    assert not (local / "dog/3.png").exists()
    assert (local / "cat/1.png").read_bytes() == b"a new, longer version"


def test_a_label_file_comes_with_its_folder(bucket):
    fs, url = bucket
    root = url.removeprefix("memory://")
    fs.pipe_file(f"/{root}/data/labels.csv", b"path,label\ncat/1.png,cat\n")
    local = storage.mirror(f"{url}/data/labels.csv")
    assert local.name == "labels.csv" and (local.parent / "cat/1.png").is_file()


def test_inputs_keep_local_paths_and_mirror_urls(bucket):
    _, url = bucket
    local = storage.mirror_inputs(["here.png", f"{url}/data/cat/1.png", f"{url}/data/dog"])
    assert local[0] == "here.png"
    assert local[1].endswith("cat/1.png") and Path(local[1]).read_bytes() == b"cat/1.png"
    assert local[2].endswith("data/dog")


def test_an_object_is_read_up_to_the_cap(bucket, monkeypatch):
    _, url = bucket
    monkeypatch.setattr(mirroring, "MAX_OBJECT_BYTES", 4)
    local = storage.mirror(f"{url}/data")
    assert (local / "cat/1.png").read_bytes() == b"cat/1"  # cap + 1: the decoder says too big
