"""A data set by URL outlined from its listing, so a multi_worker worker can choose its shard
before fetching a single image.

Why an outline and not discovery on the listing itself: discovery (class folders, label files,
the seeded validation split, every check and message) is written once, for local files
(data/layout.py). The outline gives it local files that cost nothing: each listed image
becomes a sparse file of its listed size in a temporary folder (no bytes are stored or
fetched), each label file is fetched whole (they are small, and their rows are the layout).
Every worker outlines the same listing, so every worker discovers the same data set, down to
the validation split, and the assignment of files to workers needs no communication.

The outline lives in a temporary folder, never in the cache: a later run that mirrors the
whole folder cannot take a stand-in for an image. Paths found in it are turned into the
cache paths the objects are fetched to (`Outline.local`), and only the chosen ones are
fetched (`Outline.fetch`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnclf.config.schema import DataConfig
from cnnclf.storage.mirroring import (
    MAX_OBJECT_BYTES,
    Listing,
    MirrorStats,
    cache_root,
    fetch,
    list_folder,
    mirror,
)
from cnnclf.storage.urls import is_url

log = logging.getLogger("cnnclf")

LABEL_SUFFIXES = (".csv", ".jsonl")


@dataclass
class Outline:
    """Stand-ins for the objects of data.train_dir (and data.test_dir when it shares its
    folder), and how to fetch the real ones.

    `data` is the config with its URLs replaced by stand-in paths (a data.test_dir URL in a
    folder of its own by its full mirror: validation is fetched whole by every worker).
    """

    data: DataConfig
    stand_in_root: Path  # the temporary folder, mirroring the cache's objects/ layout
    listings: list[Listing]
    stats: MirrorStats = field(default_factory=MirrorStats)  # the label files' fetch

    def local(self, path: str) -> str:
        """The cache path of a stand-in path (other paths, already local, as they are)."""
        relative = _relative_to(path, self.stand_in_root)
        return path if relative is None else str(cache_root() / "objects" / relative)

    def local_text(self, text: str) -> str:
        """`text` (an error message) with stand-in paths named by their cache paths."""
        return text.replace(str(self.stand_in_root), str(cache_root() / "objects"))

    def fetch(self, paths: Iterable[str]) -> MirrorStats:
        """Fetches the objects behind `paths` (cache paths, as `local` gives them) and says
        what that took; paths that are no listed object (a mirrored data.test_dir) are left
        alone."""
        wanted = {str(Path(p)) for p in paths}
        stats = MirrorStats()
        for listing in self.listings:
            keys = [k for k in listing.objects if str(listing.local(k)) in wanted]
            if keys:
                fetch(listing, keys, stats)
        return stats

    def listed_bytes(self, paths: Iterable[str]) -> int:
        """The listed size of the objects behind `paths` (cache paths)."""
        sizes = {
            str(listing.local(k)): int(e.get("size") or 0)
            for listing in self.listings
            for k, e in listing.objects.items()
        }
        return sum(sizes.get(str(Path(p)), 0) for p in paths)


@contextlib.contextmanager
def outline(data: DataConfig) -> Iterator[Outline]:
    """An `Outline` of `data`'s URLs, removed on exit.

    data.train_dir must be a URL. Label files (of every listed folder) are fetched whole
    into the cache and copied into the outline; images are listed only.

    Raises:
        StorageError: as `mirroring.list_folder`.
    """
    options = data.storage_options
    assert data.train_dir is not None  # a URL: the callers check
    train = list_folder(data.train_dir, options)
    listings = [train]
    replaced = {"train_dir": train}
    test_dir = data.test_dir
    local: dict[str, Any] = {}
    if is_url(test_dir):
        assert test_dir is not None
        test = list_folder(test_dir, options)
        if test.root_url == train.root_url:
            replaced["test_dir"] = test
        else:  # a folder of its own: validation images, fetched whole by every worker
            local["test_dir"] = str(mirror(test_dir, options))
    folder = Path(tempfile.mkdtemp(prefix="cnnclf-outline-"))
    try:
        stats = MirrorStats()
        _draw(train, folder, stats)
        for key, listing in replaced.items():
            local[key] = str(folder / _under_objects(listing.local(listing.target)))
        yield Outline(dataclasses.replace(data, **local), folder, listings, stats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _draw(listing: Listing, folder: Path, stats: MirrorStats) -> None:
    """Writes the stand-ins of `listing` under `folder`: label files fetched and copied,
    images as sparse files of their listed size (capped as the mirror caps them)."""
    labels = [k for k in listing.objects if k.lower().endswith(LABEL_SUFFIXES)]
    if labels:
        fetch(listing, labels, stats)
    for key, entry in listing.objects.items():
        real = listing.local(key)
        stand_in = folder / _under_objects(real)
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        if key in labels:
            shutil.copyfile(real, stand_in)
            continue
        with open(stand_in, "wb") as file:
            file.truncate(min(int(entry.get("size") or 0), MAX_OBJECT_BYTES + 1))


def _under_objects(path: Path) -> Path:
    relative = _relative_to(str(path), cache_root() / "objects")
    assert relative is not None  # every mirrored path is under the cache's objects/
    return relative


def _relative_to(path: str, root: Path) -> Path | None:
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError:
        return None
