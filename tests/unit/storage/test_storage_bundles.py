"""Bundle upload and download against fsspec's in-memory file system: the marker comes last
and nothing without it loads."""

from __future__ import annotations

import hashlib

import pytest

fsspec = pytest.importorskip("fsspec")

from cnnclf import storage  # noqa: E402
from cnnclf.storage import mirroring  # noqa: E402


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    monkeypatch.setenv(mirroring.CACHE_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "bundle"
    (folder / "logs").mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"weights")
    (folder / "logs" / "train.csv").write_text("epoch\n1\n")
    (folder / "bundle.json").write_text('{"run_id": "r1"}')
    yield folder, f"memory://u{tmp_path.name}/runs/b1"
    fsspec.filesystem("memory").rm(f"/u{tmp_path.name}", recursive=True)


def test_upload_then_download_round_trips_with_the_marker(bundle):
    folder, url = bundle
    storage.upload_bundle(folder, url)
    state = storage.bundle_state(url)
    assert state.digest == hashlib.sha256((folder / "bundle.json").read_bytes()).hexdigest()
    local = storage.local_bundle(url, "--model")
    assert (local / "model.keras").read_bytes() == b"weights"
    assert (local / "logs" / "train.csv").is_file() and not (local / storage.MARKER).exists()
    assert storage.local_bundle(url, "--model") == local  # the second load: from the cache


def test_a_bundle_without_its_marker_is_refused(bundle):
    folder, url = bundle
    storage.upload_bundle(folder, url)
    fs = fsspec.filesystem("memory")
    fs.rm_file(f"{url}/{storage.MARKER}")
    with pytest.raises(storage.StorageError, match="did not finish"):
        storage.local_bundle(url, "--model")
    with pytest.raises(storage.StorageError, match="no bundle there"):
        storage.local_bundle(url + "-other", "model.init_from")


def test_a_new_upload_removes_the_old_bundles_leftovers(bundle):
    folder, url = bundle
    storage.upload_bundle(folder, url)
    (folder / "logs" / "train.csv").unlink()
    (folder / "bundle.json").write_text('{"run_id": "r2"}')
    storage.upload_bundle(folder, url)
    fs = fsspec.filesystem("memory")
    assert not fs.exists(f"{url}/logs/train.csv")
    local = storage.local_bundle(url, "--model")
    assert (local / "bundle.json").read_text() == '{"run_id": "r2"}'


def test_files_that_do_not_match_the_marker_are_refused(bundle):
    folder, url = bundle
    storage.upload_bundle(folder, url)
    fsspec.filesystem("memory").pipe_file(f"{url}/bundle.json", b"{}")  # replaced under it
    with pytest.raises(storage.StorageError, match="do not match"):
        storage.local_bundle(url, "--model")


def test_upload_dir_is_the_same_for_the_same_url(tmp_path, monkeypatch):
    monkeypatch.setenv(mirroring.CACHE_ENV, str(tmp_path))
    assert storage.upload_dir("s3://b/runs/x") == tmp_path / "uploads" / "s3" / "b" / "runs" / "x"
