"""The data set a training run reads, and under multi_worker with data by URL, the shard of it
this worker fetches.

Why shard by file here, and not by element in tf.data as for local data: a worker that shards
a dataset built from every image must first have every image, and from a bucket that means
each worker fetching (and decoding) the whole training set to train on 1/W of it. Instead
every worker discovers the same data set from the bucket's listing alone
(storage/outline.py), takes the training files `distribute.shard_indices` deals it, and
fetches only those. Validation images are fetched whole by every worker: the chief's final
validation pass (metrics.json, the threshold, calibration) covers the whole validation set,
as in any other run.

Local data keeps tf.data's element-wise sharding: every worker reads the same disk anyway.

Two things the listing alone cannot promise, checked here: that every worker gets a file
(`_shard`, before TensorFlow loads), and that every worker saw the same listing (an object
uploaded while the workers start). The second needs the cluster, so the shard carries a
digest of the whole data set and `check_same_data` compares it across workers once the
strategy is up: shards dealt from two different lists overlap, leave files out and differ
in length, and a worker with more steps waits forever in a collective operation the others
never join.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cnnclf.config import Config
from cnnclf.data.layout import Dataset, Split, discover
from cnnclf.errors import ConfigError, DataError
from cnnclf.storage.config_paths import local_data
from cnnclf.storage.mirroring import cache_root
from cnnclf.storage.urls import is_url

if TYPE_CHECKING:
    from cnnclf.storage.outline import Outline

log = logging.getLogger("cnnclf")


@dataclass(frozen=True)
class Shard(Dataset):
    """One worker's part of a data set by URL, with `whole_digest`: a digest of the whole
    data set it was dealt from (`_digest`), which every worker of the run must share."""

    whole_digest: str = ""


def shards_by_file(config: Config) -> bool:
    """Whether each worker reads only its own training files (then tf.data must not shard
    the training set again: `distribute.shard_datasets`)."""
    return config.train.distribute == "multi_worker" and is_url(config.data.train_dir)


def training_data(config: Config) -> tuple[Dataset, Dataset]:
    """(the whole data set, the part of it this process trains on): the same object except
    under `shards_by_file`, where the second holds this worker's training shard only.

    Class weights come from the whole set, so every worker weighs the classes alike.

    Raises:
        DataError, ConfigError: as `data.layout.discover` (naming cache paths, as when the
            data is mirrored whole). StorageError: the bucket cannot be listed or read.
    """
    if not shards_by_file(config):
        dataset = discover(local_data(config.data), config.train.seed)
        return dataset, dataset
    from cnnclf.storage.outline import outline
    from cnnclf.training.distribute import worker_of

    worker, workers = worker_of(os.environ.get("TF_CONFIG"))
    with outline(config.data) as drawn:
        try:
            found = discover(drawn.data, config.train.seed)
        except (ConfigError, DataError) as exc:
            raise type(exc)(drawn.local_text(str(exc))) from None
        whole = _localized(found, drawn)
        shard = _shard(whole, worker, workers)
        mine = sorted(set(shard.train.paths))
        stats = drawn.fetch(mine)
        drawn.fetch(shard.validation.paths)
        log.info(
            "multi_worker: fetched %d of %d training images (worker %d of %d's shard; "
            "%d of %d bytes, %d of the images found in the cache)%s; validation: all %d images",
            len(mine),
            len(whole.train),
            worker,
            workers,
            drawn.listed_bytes(mine),
            drawn.listed_bytes(whole.train.paths),
            stats.cached,
            _repeated(len(shard.train) - len(mine)),
            len(whole.validation),
        )
    return whole, shard


def _repeated(extra: int) -> str:
    if not extra:
        return ""
    return f", {extra} of them twice per epoch so every worker runs as many steps"


def check_same_data(strategy, dataset: Dataset, url: str | None) -> None:
    """Stops the run on every worker when the workers dealt their shards from different
    data sets (`Shard.whole_digest`); a no-op for any other data set.

    Every worker of a run takes the same branch (they share the config), so the collective
    operation inside either runs on all of them or on none.

    Raises:
        DataError: the workers' digests differ.
    """
    digest = getattr(dataset, "whole_digest", "")
    if not digest:
        return
    from cnnclf.training.distribute import workers_agree

    if not workers_agree(strategy, bytes.fromhex(digest)):
        raise DataError(
            f"data.train_dir: workers listed different contents of {url}: do not change the "
            "data while a run starts; run again"
        )


def _shard(dataset: Dataset, worker: int, workers: int) -> Shard:
    """`dataset` with its training split cut to worker `worker`'s files.

    Raises:
        ConfigError: fewer training files than workers: a worker without a file has no
            batch to join the others' steps with.
    """
    from cnnclf.training.distribute import shard_indices

    train = dataset.train
    if len(train) < workers:
        raise ConfigError(
            f"train.distribute: multi_worker: {len(train)} training images for {workers} "
            "workers; each worker needs at least one (use fewer workers, or add images)"
        )
    keep = shard_indices(len(train), worker, workers)
    sets = train.label_sets
    split = Split(
        [train.paths[i] for i in keep],
        [train.labels[i] for i in keep],
        None if sets is None else [sets[i] for i in keep],
    )
    fields = {f.name: getattr(dataset, f.name) for f in dataclasses.fields(Dataset)}
    return Shard(**{**fields, "train": split}, whole_digest=_digest(dataset))


def _digest(dataset: Dataset) -> str:
    """What decides every worker's shard and step count (the classes, and the training and
    validation images in order with their labels), hashed. Paths are taken relative to the
    cache, which is a folder of each worker's own."""
    objects = os.path.abspath(cache_root() / "objects")

    def named(path: str) -> str:
        absolute = os.path.abspath(path)
        return (
            os.path.relpath(absolute, objects) if Path(absolute).is_relative_to(objects) else path
        )

    def split(s: Split) -> list:
        return [[named(p) for p in s.paths], s.labels, s.label_sets]

    text = json.dumps(
        [dataset.class_names, split(dataset.train), split(dataset.validation)], sort_keys=True
    )
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _localized(dataset: Dataset, drawn: Outline) -> Dataset:
    """`dataset` with every path found in the outline named by its cache path, in messages
    too (a skipped image's reason names the label file that lists it): the outline is a
    temporary folder, gone before anyone reads them."""
    local = drawn.local

    def split(s: Split) -> Split:
        return dataclasses.replace(s, paths=[local(p) for p in s.paths])

    return dataclasses.replace(
        dataset,
        train=split(dataset.train),
        validation=split(dataset.validation),
        skipped={local(p): drawn.local_text(reason) for p, reason in dataset.skipped.items()},
        labels_from={
            name: {**source, "file": local(source["file"])} if "file" in source else source
            for name, source in dataset.labels_from.items()
        },
    )
