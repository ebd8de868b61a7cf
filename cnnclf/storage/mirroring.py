"""Data by URL: listed once, fetched in parallel into a local cache, then read as local files.

Why a mirror and not streaming: every existing reader (class-folder discovery, label files,
check-data, the decoded store, --resume) works on local paths unchanged, and later epochs,
later runs and a resumed run never touch the network. A file is fetched again only when its
size or ETag in the listing changed.

The cache mirrors the keys: s3://bucket/a/b.png is <cache>/objects/s3/bucket/a/b.png, where
<cache> is $CNNCLF_CACHE_DIR, else $XDG_CACHE_HOME/cnnclf, else ~/.cache/cnnclf. Objects that
left the listing are removed from the mirror, so discovery sees the bucket as it is now.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnclf.storage.retry import with_retries
from cnnclf.storage.urls import filesystem, is_url

log = logging.getLogger("cnnclf")

CACHE_ENV = "CNNCLF_CACHE_DIR"
INDEX_FILE = ".cnnclf-objects.json"  # key -> "size:etag" of the mirrored objects
# What a listing keeps: images by extension (as data/listing.py) and label files.
WANTED_SUFFIXES = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".csv", ".jsonl",
)  # fmt: skip
# Bytes kept of one object: an image file this large is refused by the decoder anyway (its
# header or its decode budget), so fetching more than this of it would only cost time.
MAX_OBJECT_BYTES = 256 * 2**20
THREADS = 16  # parallel requests: enough to hide an object store's latency, no more


@dataclass
class MirrorStats:
    """What one `mirror` call did (tests and the benchmark read it)."""

    listed: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    cached: int = 0
    removed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def cache_root() -> Path:
    """The cache folder (documented in docs/guide/storage.md)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "cnnclf"


def local_path(url: str) -> Path:
    """Where `url` is mirrored: its scheme, bucket and key under <cache>/objects."""
    scheme, _, rest = url.partition("://")
    parts = [p for p in rest.split("/") if p not in ("", ".", "..")]
    return cache_root().joinpath("objects", scheme, *parts)


@dataclass
class Listing:
    """One listing of the folder a data URL names: what `mirror` fetches from, and what a
    multi_worker worker decides its shard on before fetching anything (storage/outline.py).

    `objects` maps each wanted key (images and label files) to its listed entry (size, ETag).
    """

    fs: Any
    scheme: str
    root: str  # the folder's key: bucket/prefix, no scheme
    objects: dict[str, dict]
    target: str  # the key the URL named: `root` itself, or a label file in it

    @property
    def root_url(self) -> str:
        return f"{self.scheme}://{self.root}"

    @property
    def local_root(self) -> Path:
        return local_path(self.root_url)

    def local(self, key: str) -> Path:
        """Where the object `key` is (or will be) mirrored."""
        return self.local_root / key[len(self.root) :].lstrip("/")


def list_folder(url: str, options: dict | None = None) -> Listing:
    """Lists `url` (a folder, or a label file with its folder) once, fetching nothing.

    A label file's rows name images relative to the file, so the folder it sits in is
    listed with it.

    Raises:
        StorageError: one line for no credentials, no such bucket or object, access denied,
            or the network failing after retries.
    """
    fs, path = filesystem(url, options)
    scheme = url.partition("://")[0]
    info = with_retries(lambda: fs.info(path), url)
    is_file = info.get("type") == "file"
    root = path.rsplit("/", 1)[0] if is_file else path.rstrip("/")
    listing = with_retries(lambda: fs.find(root, detail=True), f"{scheme}://{root}")
    wanted = {
        key: entry
        for key, entry in listing.items()
        if entry.get("type", "file") == "file" and key.lower().endswith(WANTED_SUFFIXES)
    }
    return Listing(fs, scheme, root, wanted, path if is_file else root)


def fetch(listing: Listing, keys=None, stats: MirrorStats | None = None) -> Path:
    """Brings `keys` of `listing` (all of them when None) up to date in the cache; returns
    the local copy of what the listing's URL named.

    Objects that left the listing are removed from the mirror either way; objects listed but
    not in `keys` are left as they are (fetched by an earlier run, or not at all), so a
    worker that fetches its shard leaves nothing in the cache that is not a whole object.
    """
    stats = stats if stats is not None else MirrorStats()
    stats.listed += len(listing.objects)
    _sync(listing, set(listing.objects) if keys is None else set(keys), stats)
    return listing.local(listing.target) if listing.target != listing.root else listing.local_root


def mirror(url: str, options: dict | None = None, stats: MirrorStats | None = None) -> Path:
    """The local copy of `url` (a folder, or a label file with its folder), up to date.

    Raises:
        StorageError: as `list_folder`.
    """
    stats = stats if stats is not None else MirrorStats()
    listing = list_folder(url, options)
    local = fetch(listing, None, stats)
    log.info(
        "%s: %d file(s) listed, %d fetched (%.1f MB), %d already in %s",
        listing.root_url,
        stats.listed,
        stats.fetched,
        stats.fetched_bytes / 1e6,
        stats.cached,
        listing.local_root,
    )
    return local


def _sync(listing: Listing, keys: set[str], stats: MirrorStats) -> None:
    """Fetches what changed among `keys`, removes what left the listing, records what is
    there."""
    local_root, wanted = listing.local_root, listing.objects
    index_file = local_root / INDEX_FILE
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    todo = []
    for key in sorted(keys):
        entry, target = wanted[key], listing.local(key)
        stamp = f"{entry.get('size')}:{_etag(entry)}"
        if index.get(key) == stamp and target.is_file():
            stats.cached += 1
        else:
            todo.append((key, target, stamp))
    _remove_stale(local_root, {listing.local(k) for k in wanted}, stats)
    if todo:
        with ThreadPoolExecutor(min(THREADS, len(todo))) as pool:
            jobs = [(listing.fs, listing.scheme, job, stats) for job in todo]
            done = list(pool.map(lambda job: _fetch(*job), jobs))
        index.update(dict(done))
    index = {key: stamp for key, stamp in index.items() if key in wanted}
    local_root.mkdir(parents=True, exist_ok=True)
    temp = index_file.with_name(f"{INDEX_FILE}.{uuid.uuid4().hex}")
    temp.write_text(json.dumps(index))
    os.replace(temp, index_file)


def _etag(entry: dict) -> str:
    """The object's version stamp as the back-end lists it (S3: ETag; GCS: md5Hash)."""
    return str(entry.get("ETag") or entry.get("etag") or entry.get("md5Hash") or "")


def _fetch(fs, scheme: str, job: tuple[str, Path, str], stats: MirrorStats) -> tuple[str, str]:
    """One object to its place (a temporary name, then a rename: a killed fetch leaves no
    half file for discovery to find), at most MAX_OBJECT_BYTES + 1 of it."""
    key, target, stamp = job
    url = f"{scheme}://{key}"
    data = with_retries(lambda: _read_capped(fs, key), url)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    temp.write_bytes(data)
    os.replace(temp, target)
    with stats.lock:
        stats.fetched += 1
        stats.fetched_bytes += len(data)
    return key, stamp


def _read_capped(fs, key: str) -> bytes:
    with fs.open(key, "rb") as file:
        return file.read(MAX_OBJECT_BYTES + 1)


def _remove_stale(local_root: Path, keep: set[Path], stats: MirrorStats) -> None:
    if not local_root.is_dir():
        return
    for dirpath, _, files in os.walk(local_root):
        for name in files:
            path = Path(dirpath) / name
            if name.lower().endswith(WANTED_SUFFIXES) and path not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()
                    stats.removed += 1


def mirror_inputs(inputs: list[str] | tuple[str, ...], options: dict | None = None) -> list[str]:
    """predict's and evaluate's arguments with each URL replaced by its local mirror (a
    folder URL by the folder, an object URL by the file)."""
    out = []
    for arg in inputs:
        if not is_url(arg):
            out.append(arg)
            continue
        out.append(str(_mirror_any(arg, options)))
    return out


def _mirror_any(url: str, options: dict | None) -> Path:
    """An image object alone (not its whole folder, as a label file's), or a folder."""
    fs, path = filesystem(url, options)
    info = with_retries(lambda: fs.info(path), url)
    if info.get("type") != "file" or url.lower().endswith((".csv", ".jsonl")):
        return mirror(url, options)
    target = local_path(url)
    if not target.is_file() or target.stat().st_size != info.get("size"):
        stats = MirrorStats()
        scheme = url.partition("://")[0]
        _fetch(fs, scheme, (path, target, ""), stats)
    return target
