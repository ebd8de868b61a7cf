"""A config's URLs swapped for local copies, for the readers that take local paths only.

The config itself keeps its URLs: it is what the bundle records and what --resume compares,
and a cache path would tie both to one machine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cnnclf.config import Config
from cnnclf.config.schema import DataConfig
from cnnclf.storage.bundles import local_bundle
from cnnclf.storage.mirroring import mirror
from cnnclf.storage.urls import is_url


def local_data(data: DataConfig) -> DataConfig:
    """`data` with data.train_dir and data.test_dir URLs mirrored into the cache, whole.

    A multi_worker training run does not come here for its training data: each worker
    fetches only its own shard of it (training/shards.py, through storage/outline.py).
    """
    local: dict[str, Any] = {
        key: str(mirror(value, data.storage_options))
        for key in ("train_dir", "test_dir")
        if is_url(value := getattr(data, key))
    }
    return dataclasses.replace(data, **local) if local else data


def local_init_from(config: Config) -> Config:
    """`config` with a model.init_from URL replaced by the downloaded bundle's folder."""
    source = config.model.init_from
    if not is_url(source):
        return config
    assert source is not None
    folder = local_bundle(source, "model.init_from", config.data.storage_options)
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, init_from=str(folder))
    )
