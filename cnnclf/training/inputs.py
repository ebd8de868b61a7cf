"""A run's images: decoded once into stores before training, counted, described, and fed to
`fit` as tf.data datasets.

The stores are filled before TensorFlow builds a model, so a data set that cannot train (a class
with no readable image, nothing to validate on) stops the run before any training.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from cnnclf.config import Config
from cnnclf.data.decode import ImageSpec
from cnnclf.data.layout import Dataset

log = logging.getLogger("cnnclf")


def image_spec(config: Config) -> ImageSpec:
    return ImageSpec(
        tuple(config.data.image_size), config.data.color_mode, config.data.interpolation
    )


def open_stores(config: Config, dataset: Dataset, stack, skipped) -> dict:
    """The decoded-image stores of both sets, in a cache folder removed when the run ends."""
    from cnnclf.data.pipeline import choose_cache, decoded_mb, open_store

    spec = image_spec(config)
    cache_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cnnclf-cache-")))
    budget: float = config.data.cache_memory_mb
    train_cache = choose_cache(config.data.cache, len(dataset.train), spec, budget)
    if train_cache == "memory":  # one budget for both sets
        budget -= decoded_mb(len(dataset.train), spec)
    val_cache = choose_cache(config.data.cache, len(dataset.validation), spec, budget)
    return {
        "train": open_store(
            dataset.train,
            spec=spec,
            training=True,
            seed=config.train.seed,
            cache=train_cache,
            cache_path=str(cache_dir / "train"),
            skipped=skipped,
            n_classes=len(dataset.class_names),
        ),
        "validation": open_store(
            dataset.validation,
            spec=spec,
            training=False,
            seed=config.train.seed,
            cache=val_cache,
            cache_path=str(cache_dir / "validation"),
            skipped=skipped,
            n_classes=len(dataset.class_names),
        ),
    }


def decode_stores(stores: dict, dataset: Dataset, skipped) -> dict:
    """Decodes every image once before the first epoch; returns the counts actually used.

    Why before training: a class whose files are all unreadable, or a validation set with no
    readable image, must stop the run before hours of training, not after, and bundle.json
    must count the images the model saw, not the files that were listed. With a cache the
    first epoch reads what this pass decoded, so it costs no extra decoding.
    """
    import numpy as np

    from cnnclf.data.pipeline import decode_all
    from cnnclf.errors import DataError
    from cnnclf.progress import Progress

    total = sum(len(s.store) for s in stores.values())
    used = {}
    with Progress(
        f"decoding {total} images once, on every core, before the first epoch",
        total,
        announce=total >= 2000,  # a pause worth explaining; small sets decode in a blink
    ) as progress:
        for name, opened in stores.items():
            decode_all(opened.store, progress=progress)
            used[name] = opened.used_counts(dataset.class_names)
    for name, key in (("train", "data.train_dir"), ("validation", _validation_key(dataset))):
        empty = [c for c, n in used[name].items() if n == 0]
        if name == "train" and empty:
            label = dataset.class_names.index(empty[0])
            labels = stores[name].labels
            if labels.ndim == 2:  # multi-hot rows: the images carrying the class
                labels = np.where(labels[:, label] > 0, label, -1)
            examples = _examples(stores[name].store, label, labels, skipped)
            raise DataError(
                f"{key}: class {empty[0]} has no readable image ({examples}); "
                "run cnnclf check-data to see every problem"
            )
        if name == "validation" and not stores[name].used_images():
            raise DataError(
                f"{key}: no readable image to validate on "
                f"({len(stores[name].store)} file(s), all unreadable); run cnnclf "
                "check-data to see every problem"
            )
    return used


def _validation_key(dataset: Dataset) -> str:
    return "data.test_dir" if dataset.validation_source == "test_dir" else "data.validation_split"


def _examples(store, label: int, labels, skipped) -> str:
    paths = [p for p, y in zip(store.paths, labels) if y == label]
    if not paths:
        return "no files"
    reason = skipped.reasons.get(paths[0], "unreadable")
    return f"{len(paths)} file(s), all unreadable, e.g. {paths[0]}: {reason}"


def make_datasets(config: Config, dataset: Dataset, stores: dict, placement):
    """(where augmentation runs or None, training dataset, validation dataset) from the stores.

    Augmentation runs in the input pipeline or in the training step (`augment.where`); in the
    step it is part of the model `fit` trains, not of these datasets.
    """
    from cnnclf.data.augment import is_active, make_augmenter, where_to_augment
    from cnnclf.data.pipeline import make_dataset

    spec = image_spec(config)
    augment_where = (
        where_to_augment(config.augment.where, placement.devices)
        if is_active(config.augment)
        else None
    )
    augmenter = (
        make_augmenter(config.augment, spec.image_size) if augment_where == "pipeline" else None
    )
    common = dict(
        spec=spec,
        n_classes=len(dataset.class_names),
        batch_size=config.data.batch_size,
        seed=config.train.seed,
        distributed=placement.strategy != "default",
    )
    train_ds = make_dataset(
        stores["train"],
        training=True,
        shuffle_buffer=config.data.shuffle_buffer,
        augmenter=augmenter,
        **common,
    )
    val_ds = make_dataset(stores["validation"], training=False, **common)
    if placement.strategy == "multi_worker":
        from cnnclf.training.distribute import shard_datasets
        from cnnclf.training.shards import shards_by_file

        train_ds, val_ds = shard_datasets(train_ds, val_ds, shards_by_file(config))
    return augment_where, train_ds, val_ds


def describe(dataset: Dataset, used: dict, class_weight: dict | None) -> None:
    log.info(
        "classes: %s",
        ", ".join(
            f"{name} ({used['train'][name]} train, {used['validation'][name]} val)"
            for name in dataset.class_names
        ),
    )
    if class_weight:
        log.info(
            "class weights: %s",
            ", ".join(f"{dataset.class_names[i]} {w:.3g}" for i, w in class_weight.items()),
        )
    if dataset.validation_source == "validation_split":
        log.info(
            "validation: %d images held out of data.train_dir (data.validation_split)",
            sum(used["validation"].values()),
        )
    elif set(dataset.train.paths) & set(dataset.validation.paths):
        log.warning(
            "warning: data.test_dir holds the training images themselves (the same "
            "folder or links into it): validation accuracy will measure memory, not "
            "generalisation; set data.test_dir: null to hold out "
            "data.validation_split instead"
        )


def validation_folder(config: Config, dataset: Dataset) -> str:
    folder = (
        config.data.test_dir if dataset.validation_source == "test_dir" else config.data.train_dir
    )
    assert folder is not None  # discover() found the data in it
    return folder


def warn_skipped(skipped: dict) -> None:
    if not skipped:
        return
    listed = "; ".join(f"{path} ({reason})" for path, reason in sorted(skipped.items())[:10])
    more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    log.warning(
        "warning: skipped %d unreadable image(s), listed in bundle.json: %s%s",
        len(skipped),
        listed,
        more,
    )
