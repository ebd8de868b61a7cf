"""Bundles by URL: uploaded marker last, downloaded only when the marker says complete.

An upload to U (a prefix: s3://bucket/runs/b1):

    1. U/_COMPLETE is removed (an older bundle there stops loading before any file changes);
    2. every file of the local bundle is uploaded (in parallel, with retries);
    3. objects under U that the bundle does not have are removed (an older bundle's leftovers);
    4. U/_COMPLETE is written: the SHA-256 of the bundle's bundle.json.

A process killed anywhere before 4 leaves U without its marker, and `--model U` refuses it;
the same `cnnclf train` command (or with --resume) finds the bundle already built in the
local upload folder and uploads it again. A download is verified against the marker's hash,
then kept in the cache by that hash: loading the same bundle again costs one small request.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cnnclf.storage.errors import StorageError, no_such_bucket
from cnnclf.storage.faults import fault_point
from cnnclf.storage.mirroring import THREADS, cache_root, local_path
from cnnclf.storage.retry import with_retries
from cnnclf.storage.urls import filesystem, join

log = logging.getLogger("cnnclf")

MARKER = "_COMPLETE"
MANIFEST = "bundle.json"  # written last into a bundle: its hash names the bundle


@dataclass(frozen=True)
class BundleState:
    """What is at a bundle URL: `digest` is the marker's content, None without a marker."""

    url: str
    digest: str | None
    has_objects: bool

    @property
    def complete(self) -> bool:
        return self.digest is not None


def manifest_digest(bundle_dir: Path) -> str:
    return hashlib.sha256((bundle_dir / MANIFEST).read_bytes()).hexdigest()


def upload_dir(url: str) -> Path:
    """The local folder a bundle for `url` is built in: the same for the same URL, so a
    re-run or --resume finds what the killed run built."""
    return cache_root() / "uploads" / local_path(url).relative_to(cache_root() / "objects")


def bundle_state(url: str, options: dict | None = None) -> BundleState:
    """The marker at `url`, read before anything heavy loads: it also proves that the bucket
    exists and the credentials can reach it."""
    fs, root = filesystem(url, options)
    marker = join(root, MARKER)

    def read() -> tuple[str | None, bool]:
        try:
            return fs.cat_file(marker).decode("ascii", "replace").strip(), True
        except FileNotFoundError as exc:
            if no_such_bucket(exc):
                raise
            fs.invalidate_cache(root)
            return None, bool(fs.exists(root) and fs.find(root, maxdepth=1))

    digest, has_objects = with_retries(read, url)
    return BundleState(url, digest, has_objects)


def upload_bundle(bundle_dir: Path, url: str, options: dict | None = None) -> None:
    """Uploads the complete local bundle `bundle_dir` to `url`, marker last (see above)."""
    fs, root = filesystem(url, options)
    marker = join(root, MARKER)
    digest = manifest_digest(bundle_dir)
    with_retries(lambda: fs.rm_file(marker) if fs.exists(marker) else None, url)
    fault_point("upload.marker_removed")
    files = sorted(p for p in bundle_dir.rglob("*") if p.is_file())
    relative = [p.relative_to(bundle_dir).as_posix() for p in files]

    def put(pair: tuple[Path, str]) -> None:
        local, rel = pair
        with_retries(lambda: fs.put_file(str(local), join(root, rel)), join(url, rel))
        fault_point("upload.file_written")

    with ThreadPoolExecutor(min(THREADS, max(1, len(files)))) as pool:
        list(pool.map(put, zip(files, relative)))
    fault_point("upload.files_written")
    fs.invalidate_cache(root)
    keep = {join(root, rel) for rel in relative}
    stale = [k for k in with_retries(lambda: fs.find(root), url) if k not in keep]
    if stale:
        with_retries(lambda: fs.rm(stale), url)
    with_retries(lambda: fs.pipe_file(marker, digest.encode("ascii")), url)
    log.info("uploaded the bundle to %s (%d files, marker %s)", url, len(files), MARKER)


def local_bundle(url: str, key: str, options: dict | None = None) -> Path:
    """A local copy of the complete bundle at `url` (downloaded once per bundle).

    Raises:
        StorageError: no marker (an unfinished upload, or no bundle), a download that does
            not match it, or the storage errors `with_retries` explains. `key` names the
            option (--model, model.init_from) in the message.
    """
    state = bundle_state(url, options)
    if not state.complete:
        what = (
            "its upload did not finish (no _COMPLETE marker): run the training command "
            "again to complete it"
            if state.has_objects
            else "no bundle there"
        )
        raise StorageError(f"{key} {url}: {what}")
    assert state.digest is not None
    target = cache_root() / "bundles" / state.digest[:32]
    if (target / MANIFEST).is_file() and manifest_digest(target) == state.digest:
        return target
    fs, root = filesystem(url, options)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    try:
        keys = [k for k in with_retries(lambda: fs.find(root), url) if not k.endswith(MARKER)]

        def get(remote: str) -> None:
            local = temp / remote[len(root.rstrip("/")) + 1 :]
            local.parent.mkdir(parents=True, exist_ok=True)
            with_retries(lambda: fs.get_file(remote, str(local)), url)

        with ThreadPoolExecutor(min(THREADS, max(1, len(keys)))) as pool:
            list(pool.map(get, keys))
        if not (temp / MANIFEST).is_file() or manifest_digest(temp) != state.digest:
            raise StorageError(
                f"{key} {url}: its files do not match its _COMPLETE marker (being replaced "
                "right now?); try again"
            )
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return target
