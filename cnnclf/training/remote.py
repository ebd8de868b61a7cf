"""`cnnclf train --out URL`: the bundle is built in a local folder as always, then uploaded.

The local folder (storage.upload_dir) is the same for the same URL, so everything the run
directory guarantees holds there: checkpoints stay local, --resume continues from them. The
upload writes its marker last (storage/bundles.py); a run killed while uploading leaves a
complete local bundle, and the same command run again uploads it instead of training again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from cnnclf import storage
from cnnclf.bundle import is_bundle
from cnnclf.config import Config
from cnnclf.errors import ConfigError, RunStopped
from cnnclf.training.record import TrainResult

log = logging.getLogger("cnnclf")


def train_to_url(
    train: Callable[..., TrainResult], config: Config, url: str, **options
) -> TrainResult:
    """Trains into the URL's local folder (unless its bundle is there, awaiting upload), then
    uploads it. `options` are `run.train`'s keyword arguments.

    Raises:
        ConfigError: `url` holds a complete bundle and neither --overwrite nor --resume was
            given. StorageError: the bucket cannot be reached or written (checked first, so
            before TensorFlow loads).
    """
    storage_options = config.data.storage_options
    remote = storage.bundle_state(url, storage_options)
    local = storage.upload_dir(url)
    overwrite, resume = options["overwrite"], options["resume"]
    if remote.complete and not (overwrite or resume):
        raise ConfigError(
            f"--out {url}: already holds a bundle; add --overwrite to replace it (once "
            "training succeeds)"
        )
    built = is_bundle(local) and not overwrite
    if built and storage.bundles.manifest_digest(local) == remote.digest:
        log.info("--out %s: already holds this bundle (built in %s)", url, local)
        return _result(local)
    if built:
        log.warning("--out %s: uploading the bundle built earlier in %s", url, local)
        storage.upload_bundle(local, url, storage_options)
        return _result(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = train(
            config, out_dir=local, **{**options, "overwrite": overwrite or is_bundle(local)}
        )
    except RunStopped as exc:
        exc.destination = url  # the resume command names the URL, not the cache folder
        raise
    if result.bundle_dir is not None:  # None: a multi_worker worker other than the chief
        storage.upload_bundle(Path(result.bundle_dir), url, storage_options)
    return result


def _result(bundle_dir: Path) -> TrainResult:
    """What `train` reports for a bundle uploaded without training: no new figures."""
    return TrainResult(bundle_dir, {}, {}, 0.0, {})
