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
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable

from cnnclf.config import Config
from cnnclf.data.layout import Dataset, Split, discover
from cnnclf.errors import ConfigError, DataError
from cnnclf.storage.config_paths import local_data
from cnnclf.storage.urls import is_url

log = logging.getLogger("cnnclf")


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
        whole = _localized(found, drawn.local)
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


def _shard(dataset: Dataset, worker: int, workers: int) -> Dataset:
    """`dataset` with its training split cut to worker `worker`'s files."""
    from cnnclf.training.distribute import shard_indices

    train = dataset.train
    keep = shard_indices(len(train), worker, workers)
    sets = train.label_sets
    split = Split(
        [train.paths[i] for i in keep],
        [train.labels[i] for i in keep],
        None if sets is None else [sets[i] for i in keep],
    )
    return dataclasses.replace(dataset, train=split)


def _localized(dataset: Dataset, local: Callable[[str], str]) -> Dataset:
    """`dataset` with every path found in the outline named by its cache path."""

    def split(s: Split) -> Split:
        return dataclasses.replace(s, paths=[local(p) for p in s.paths])

    return dataclasses.replace(
        dataset,
        train=split(dataset.train),
        validation=split(dataset.validation),
        skipped={local(p): reason for p, reason in dataset.skipped.items()},
        labels_from={
            name: {**source, "file": local(source["file"])} if "file" in source else source
            for name, source in dataset.labels_from.items()
        },
    )
