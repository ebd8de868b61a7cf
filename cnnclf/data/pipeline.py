"""The tf.data input pipeline for training and validation.

Order matters for speed and correctness:
files shuffled once (seeded) -> every image decoded once into the decoded-image store before
training (`decode_all`; unreadable files are dropped and recorded, not fatal) -> per-epoch
shuffle -> batch -> batched augmentation (training, when it runs in the pipeline) -> prefetch.
A memory store is read in place as one tensor (slices of it are shuffled and batched, as
plain tf.data reads an array) where `make_dataset` can; otherwise the pipeline shuffles
*indices* and reads each batch with one gather. Either way the shuffle buffer holds no
pixels, so memory does not grow with the data set (see data/store.py); storing uint8 keeps the
store four times smaller than float32.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cnnclf.data.decode import ImageSpec

if TYPE_CHECKING:
    import numpy as np

    from cnnclf.data.store import DecodedStore


@dataclass
class SkippedFiles:
    """Files the pipeline could not decode; filled while tf.data runs (thread-safe)."""

    reasons: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, path: str, reason: str) -> None:
        with self._lock:
            self.reasons[path] = reason


def choose_cache(cache: str, n_images: int, spec: ImageSpec, memory_mb: float) -> str:
    """Resolves `data.cache: auto` to memory or disk from the decoded data set's size."""
    if cache != "auto":
        return cache
    return "memory" if decoded_mb(n_images, spec) <= memory_mb else "disk"


def decoded_mb(n_images: int, spec: ImageSpec) -> float:
    """Memory that `n_images` decoded images take in the store (uint8)."""
    return n_images * math.prod(spec.shape) / 2**20


@dataclass
class OpenedStore:
    """One set's decoded-image store and its labels, in the order the store holds them."""

    store: DecodedStore
    # int32 class indices [N], or for a multi-label split float32 multi-hot rows [N, classes]
    labels: np.ndarray

    @property
    def multi_label(self) -> bool:
        return self.labels.ndim == 2

    def used_counts(self, class_names: list[str]) -> dict[str, int]:
        """Images per class that decoded (after `decode_all`), i.e. what training uses; an
        image with two labels counts for both."""
        import numpy as np

        from cnnclf.data.store import UNREADABLE

        ok = self.store.state != UNREADABLE
        if self.multi_label:
            counts = self.labels[ok].sum(axis=0).astype(np.int64)
        else:
            counts = np.bincount(self.labels[ok], minlength=len(class_names))
        return {name: int(counts[i]) for i, name in enumerate(class_names)}

    def used_images(self) -> int:
        """Images that decoded: with several labels per image, not the sum of the counts."""
        from cnnclf.data.store import UNREADABLE

        return int((self.store.state != UNREADABLE).sum())


def open_store(
    split,
    *,
    spec: ImageSpec,
    training: bool,
    seed: int,
    cache: str = "memory",
    cache_path: str | None = None,
    skipped: SkippedFiles | None = None,
    n_classes: int = 0,
) -> OpenedStore:
    """A decoded-image store for `split` (a `layout.Split`); no TensorFlow.

    Training files are shuffled once (seeded) here, so the bounded shuffle buffer later never
    sees long runs of a single class. A multi-label split's labels become multi-hot rows of
    `n_classes` columns.
    """
    import numpy as np

    from cnnclf.data.store import DecodedStore

    skipped = skipped if skipped is not None else SkippedFiles()
    order = list(range(len(split.paths)))
    if training:
        random.Random(seed).shuffle(order)
    store = DecodedStore([split.paths[i] for i in order], spec, cache, cache_path, skipped.add)
    if getattr(split, "label_sets", None) is not None:
        multi_hot = np.zeros((len(order), n_classes), np.float32)
        for row, i in enumerate(order):
            multi_hot[row, list(split.label_sets[i])] = 1.0
        return OpenedStore(store, multi_hot)
    return OpenedStore(store, np.asarray([split.labels[i] for i in order], np.int32))


def decode_all(store, workers: int | None = None, progress=None) -> None:
    """Reads every image of `store` once, on all cores (Pillow releases the GIL).

    Unreadable files are recorded by the store; a cache that cannot be written (a full disk)
    raises a `CnnclfError` naming the folder, instead of a TensorFlow op error mid-epoch.
    `progress` (a `cnnclf.progress.Progress`, or None) counts each image read.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for _ in pool.map(store.read, range(len(store)), chunksize=64):
            if progress is not None:
                progress.advance()


def make_dataset(
    opened: OpenedStore,
    *,
    spec: ImageSpec,
    n_classes: int,
    batch_size: int,
    training: bool,
    seed: int,
    shuffle_buffer: int = 10000,
    augmenter=None,
    distributed: bool = False,
):
    """Builds a batched `tf.data.Dataset` of (images 0-255, labels) from a store.

    Images are uint8 batches (a quarter of float32's bytes to move to a device; the model
    casts them), or float32 when `augmenter` resampled them here.

    Args:
        opened: from `open_store`; images are read from its store, labels from it too.
        spec: how files become arrays (shared with prediction).
        n_classes: 2 gives float labels of shape [B, 1] for a sigmoid; more gives one-hot; a
            multi-label store gives its multi-hot rows [B, classes] whatever the count.
        training: shuffle (and augment, with `augmenter`) when true.
        seed: seeds the shuffle and the augmentation.
        augmenter: from `augment.make_augmenter`, or None (none here: augment.where: step
            augments inside the training step instead).
        distributed: the dataset goes to a tf.distribute strategy other than the default
            (one_device, mirrored, multi_worker). The store is then read through NumPy, not
            in place: multi-worker sharding rewrites the dataset's graph (a store tensor in
            it is copied whole), and with the in-place read the strategies' multi-device
            iterator crashed here (a segmentation fault in its background thread, in mirrored
            trainings on two logical CPUs, with the store copied or not).
    """
    import numpy as np
    import tensorflow as tf

    from cnnclf.data.store import UNREADABLE

    store = opened.store
    targets = _model_labels(opened.labels, n_classes)
    # After `decode_all` the unreadable files are known: leaving them out here (instead of
    # filtering images later) gives the dataset a known length, so Keras shows "3/40", not
    # "3/Unknown".
    keep = np.flatnonzero(store.state != UNREADABLE).astype(np.int64)
    in_place = not distributed and _readable_in_place(store, keep)
    augmented_here = training and augmenter is not None
    ds = _slices(store, targets, keep, in_place)
    if training:
        # Shuffling slices or indices with the same seed gives the same order of images, so
        # every way of reading gives the same batches.
        ds = ds.shuffle(
            min(shuffle_buffer, max(1, len(keep))), seed=seed, reshuffle_each_iteration=True
        )
    ds = _batch(
        ds,
        store,
        spec,
        batch_size,
        length=len(keep),
        in_place=in_place,
        augmented_here=augmented_here,
    )
    if augmented_here:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: (augmenter(batch[0], s), batch[1]), num_parallel_calls=tf.data.AUTOTUNE
        )
    ds = ds.prefetch(tf.data.AUTOTUNE)
    if in_place:
        # Any rewrite of the dataset's graph (tf.data's default optimizations among them)
        # serializes it, and the store tensor with it: a copy of the whole store, in memory
        # and in time, before the first batch.
        options = tf.data.Options()
        options.experimental_optimization.apply_default_optimizations = False
        ds = ds.with_options(options)
    return ds


def _slices(store, targets, keep, in_place: bool):
    """(image, label) slices of the store itself (`in_place`), else (index, label) slices."""
    import tensorflow as tf

    if not in_place:
        return tf.data.Dataset.from_tensor_slices((keep, targets[keep]))
    # Under the default strategy (CPU training, `distribute: none`), a memory store with
    # every image readable is read as plain tf.data reads an array, by slices of one
    # tensor, except that the tensor *is* the store's array (DLPack: no copy). Slices
    # alias it (images of a multiple of 64 bytes: others would be copied), so the
    # shuffle buffer holds no pixels.
    return tf.data.Dataset.from_tensor_slices(
        (tf.experimental.dlpack.from_dlpack(store.array.__dlpack__()), targets)
    )


def _batch(ds, store, spec: ImageSpec, batch_size: int, *, length, in_place, augmented_here):
    """Batches of `length` images, from slices of the store (`in_place`) or from indices."""
    import tensorflow as tf

    from cnnclf.data.parallel_copy import batch_copying_in_parallel

    if in_place and augmented_here:
        # The augmentation after it keeps the cores busy: the copy's threads would only
        # compete with it.
        return ds.batch(batch_size)
    if in_place:
        return batch_copying_in_parallel(ds, batch_size)
    if store.filled:
        # A disk store, some files unreadable, images of another size, or a strategy: batches
        # of indices, each read with one gather. One map does it: every stage more costs a
        # hand-over between threads.
        return ds.batch(batch_size).map(
            lambda index, y: (_read_batch(store, index), y),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return _read_each(ds, store, spec, length).batch(batch_size)


def _model_labels(labels, n_classes: int):
    """Class indices as the model's loss takes them: [N, 1] floats for a sigmoid, else
    one-hot rows (multi-hot rows, as they are, for a multi-label store); made once in NumPy, so
    no pipeline stage converts them per batch."""
    import numpy as np

    if labels.ndim == 2:
        return labels.astype(np.float32)
    if n_classes == 2:
        return labels.astype(np.float32)[:, None]
    return np.eye(n_classes, dtype=np.float32)[labels]


def _readable_in_place(store, keep) -> bool:
    """A filled memory store with every image readable, its array and every slot on the
    64-byte boundary TensorFlow needs to take them as they are (DLPack aborts the process on
    an unaligned array; an unaligned slice is copied)."""
    return (
        store.array is not None
        and store.filled
        and 0 < len(keep) == len(store)
        and store.array.ctypes.data % 64 == 0
        and store.slot_bytes % 64 == 0
    )


def _read_batch(store, index):
    import tensorflow as tf

    images = tf.numpy_function(store.read_batch, [index], tf.uint8, stateful=False)
    images.set_shape([None, *store.shape])
    return images


def _read_each(ds, store, spec: ImageSpec, length: int):
    """Image by image, for `cache: none` (every read decodes; a file can break mid-run)."""
    import tensorflow as tf

    def read(index):
        return store.read(int(index))

    def read_op(index, label):
        image, ok = tf.numpy_function(read, [index], [tf.uint8, tf.bool], stateful=False)
        image.set_shape(spec.shape)
        ok.set_shape([])
        return image, label, ok

    ds = ds.map(read_op, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # The length stays declared, so every cache mode runs the same epochs on the same
    # images; a file broken mid-run then ends the epoch with TensorFlow's length error.
    ds = ds.filter(lambda image, label, ok: ok).apply(
        tf.data.experimental.assert_cardinality(length)
    )
    return ds.map(lambda image, label, ok: (image, label))
