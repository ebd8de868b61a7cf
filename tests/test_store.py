"""Decoded images are kept between epochs (memory or disk) without changing what is trained."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tree, read_json, run_cli, run_process, write_config

from cnnclf.data.decode import ImageSpec
from cnnclf.data.store import DecodedStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_images_come_from_the_store_after_the_first_read(tmp_path, where):
    tree = make_tree(tmp_path / "data", n_train=3, with_test=False)
    paths = sorted(str(p) for p in (tree / "training_set").rglob("*.*"))
    store = DecodedStore(paths, ImageSpec((16, 16)), where, str(tmp_path / "store.bin"))
    first = [store.read(i) for i in range(len(paths))]
    for path in paths:  # the sources are gone: only the store can answer now
        Path(path).unlink()
    again = [store.read(i) for i in range(len(paths))]
    assert all(ok for _, ok in first + again)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(first, again))
    assert first[0][0].shape == (16, 16, 3) and first[0][0].dtype == np.uint8


def test_without_a_store_every_read_decodes(tmp_path):
    tree = make_tree(tmp_path / "data", n_train=1, with_test=False)
    paths = sorted(str(p) for p in (tree / "training_set").rglob("*.*"))
    store = DecodedStore(paths, ImageSpec((16, 16)), "none")
    assert store.read(0)[1]
    Path(paths[0]).unlink()
    assert not store.read(0)[1]


def test_an_unreadable_file_is_reported_once_and_dropped(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    reported = []
    store = DecodedStore(
        [str(broken)],
        ImageSpec((16, 16)),
        "memory",
        on_unreadable=lambda path, reason: reported.append(path),
    )
    assert [store.read(0)[1] for _ in range(3)] == [False, False, False]
    assert reported == [str(broken)]


@pytest.mark.slow
def test_every_cache_mode_trains_on_the_same_images(tmp_path, binary_tree):
    losses = {}
    for cache in ("memory", "disk", "none"):
        config = write_config(
            tmp_path / f"{cache}.yaml",
            binary_tree,
            data={
                "train_dir": str(binary_tree / "training_set"),
                "test_dir": str(binary_tree / "test_set"),
                "image_size": [16, 16],
                "batch_size": 8,
                "cache": cache,
            },
            train={"epochs": 2, "seed": 3, "deterministic": True},
        )
        result = run_cli("train", "--config", config, "--out", tmp_path / cache)
        assert result.exit_code == 0, result.output
        assert f"cache: {cache}" in result.stderr
        losses[cache] = read_json(tmp_path / cache / "history.json")["loss"]
    assert losses["memory"] == losses["disk"] == losses["none"]


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_a_filled_store_reads_whole_batches(tmp_path, where):
    tree = make_tree(tmp_path / "data", n_train=3, with_test=False)
    paths = sorted(str(p) for p in (tree / "training_set").rglob("*.*"))
    broken = tmp_path / "zz-broken.png"  # the last slot: a disk store's file must still map
    broken.write_bytes(b"not an image")
    store = DecodedStore(
        paths + [str(broken)], ImageSpec((16, 16)), where, str(tmp_path / "store.bin")
    )
    assert not store.filled
    singles = [store.read(i) for i in range(len(store))]
    assert store.filled and not singles[-1][1]
    batch = store.read_batch([4, 0, 4, 2])
    assert batch.dtype == np.uint8 and batch.shape == (4, 16, 16, 3)
    for got, index in zip(batch, [4, 0, 4, 2]):
        assert np.array_equal(got, singles[index][0])
    for wrong in ([0, len(store)], [-1]):
        with pytest.raises(IndexError):
            store.read_batch(wrong)


def store_dataset(tmp_path, cache, n_train=6, broken=1, **kwargs):
    """make_dataset over a decoded store of `make_tree` images plus `broken` unreadable files."""
    from cnnclf.data.layout import Split
    from cnnclf.data.pipeline import decode_all, make_dataset, open_store

    tree = make_tree(tmp_path / "data", n_train=n_train, with_test=False)
    paths = sorted(str(p) for p in (tree / "training_set").rglob("*.*"))
    for i in range(broken):
        (tmp_path / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff broken")
        paths.append(str(tmp_path / f"broken{i}.jpg"))
    labels = [i % 2 for i in range(len(paths))]
    opened = open_store(
        Split(paths, labels),
        spec=ImageSpec((16, 16)),
        training=True,
        seed=3,
        cache=cache,
        cache_path=str(tmp_path / f"{cache}.bin"),
    )
    decode_all(opened.store, workers=2)
    spec = ImageSpec((16, 16))
    return opened, make_dataset(
        opened, spec=spec, n_classes=2, batch_size=4, training=True, seed=3, **kwargs
    )


def epoch_images(ds):
    return [image.tobytes() for images, _ in ds.as_numpy_iterator() for image in images]


@pytest.mark.slow  # imports TensorFlow
@pytest.mark.parametrize("cache", ["memory", "disk", "none"])
def test_each_epoch_reads_every_readable_image_once_in_a_new_order(tmp_path, cache):
    opened, ds = store_dataset(tmp_path, cache)
    readable = 12  # make_tree's 2 classes x 6; the broken file is left out
    assert int(ds.cardinality()) == 3  # known length: 12 images in batches of 4
    first, second = epoch_images(ds), epoch_images(ds)
    expected = sorted(
        opened.store.read(i)[0].tobytes()
        for i in range(len(opened.store))
        if opened.store.read(i)[1]
    )
    assert len(first) == readable and sorted(first) == sorted(second) == expected
    assert first != second  # reshuffled every epoch
    images, labels = next(iter(ds))
    assert images.dtype.name == "uint8" and labels.shape == (4, 1)


@pytest.mark.slow  # imports TensorFlow
@pytest.mark.parametrize("broken", [0, 1])
def test_the_shuffle_repeats_for_the_same_seed_in_every_cache_mode(tmp_path, broken):
    # With every file readable a memory store is read in place (slices of one tensor), the
    # others by index: the same seed must still give the same batches.
    runs = {
        cache: store_dataset(tmp_path / cache, cache, broken=broken)[1]
        for cache in ("memory", "disk", "none")
    }
    orders = {cache: epoch_images(ds) for cache, ds in runs.items()}
    assert orders["memory"] == orders["disk"] == orders["none"]
    labels = {cache: [y.tolist() for _, y in ds.as_numpy_iterator()] for cache, ds in runs.items()}
    assert labels["memory"] == labels["disk"] == labels["none"]


NO_COPY_CHECK = """
import sys
import numpy as np
import tensorflow as tf
from cnnclf.data.store import DECODED, DecodedStore
from cnnclf.data.decode import ImageSpec
from cnnclf.data.pipeline import OpenedStore, make_dataset

def peak_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024

strategy, size = sys.argv[1], int(sys.argv[2])
spec = ImageSpec((size, size))
n = (96 << 20) // (size * size * 3)  # a 96 MiB store
store = DecodedStore([f"/x/{i}.png" for i in range(n)], spec, "memory")
store.array[:] = (np.arange(n) % 251).astype(np.uint8)[:, None, None, None]
store.state[:] = DECODED
list(tf.data.Dataset.range(4).map(lambda x: x + 1).batch(2))  # TensorFlow's own start-up
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # resets the peak
before = peak_mib()
ds = make_dataset(OpenedStore(store, np.arange(n, dtype=np.int32) % 2), spec=spec, n_classes=2,
                  batch_size=64, training=True, seed=1, distributed=strategy != "default")
if strategy == "one_device":
    ds = tf.distribute.OneDeviceStrategy("/cpu:0").experimental_distribute_dataset(ds)
firsts = np.concatenate([np.array(images[:, 0, 0, 0]) for images, _ in ds])
assert sorted(firsts.tolist()) == sorted((np.arange(n) % 251).tolist())
print(peak_mib() - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux peak-RSS reset")
@pytest.mark.parametrize("strategy,size", [("default", 128), ("default", 150), ("one_device", 128)])
def test_reading_a_memory_store_copies_no_image(strategy, size):
    """An epoch reads the store without copying it or holding images in the shuffle buffer
    (any rewrite of a tf.data graph copies a tensor in it; a slice of an unaligned image is
    a copy): either would double the memory a data set takes. A fresh process each, since
    memory a process freed earlier is reused without raising its peak."""
    result = run_process(
        [sys.executable, "-c", NO_COPY_CHECK, strategy, str(size)],
        "an epoch over a memory store",
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.split()[-1]) < 48  # MiB, for a 96 MiB store


@pytest.mark.slow
def test_three_classes_get_one_hot_labels_in_every_read(tmp_path):
    from cnnclf.data.layout import Split
    from cnnclf.data.pipeline import decode_all, make_dataset, open_store

    tree = make_tree(tmp_path / "data", n_train=2, with_test=False)
    paths = sorted(str(p) for p in (tree / "training_set").rglob("*.*"))
    labels = [i % 3 for i in range(len(paths))]
    for cache in ("memory", "disk"):
        opened = open_store(
            Split(paths, labels),
            spec=ImageSpec((16, 16)),
            training=False,
            seed=0,
            cache=cache,
            cache_path=str(tmp_path / "store.bin"),
        )
        decode_all(opened.store)
        ds = make_dataset(
            opened, spec=ImageSpec((16, 16)), n_classes=3, batch_size=8, training=False, seed=0
        )
        got = np.concatenate([y for _, y in ds.as_numpy_iterator()])
        assert np.array_equal(got, np.eye(3, dtype=np.float32)[labels])


@pytest.mark.slow
def test_the_in_place_read_copies_images_into_a_batch_on_several_threads():
    """The in-place read cannot have tf.data's `parallel_batch` rewrite (it copies the
    store), so it sets what that rewrite sets; measured 15-16k -> 20-21k images/s at 224x224
    on one core. Without this check a TensorFlow whose internals moved would quietly fall
    back to the slower batch. The dataset graph is TensorFlow's own (private) view of it."""
    import tensorflow as tf

    from cnnclf.data.pipeline import OpenedStore, make_dataset
    from cnnclf.data.store import DECODED

    spec = ImageSpec((8, 8))
    store = DecodedStore([f"/x/{i}.png" for i in range(6)], spec, "memory")
    store.array[:] = np.arange(6, dtype=np.uint8)[:, None, None, None]
    store.state[:] = DECODED
    ds = make_dataset(
        OpenedStore(store, np.arange(6, dtype=np.int32) % 2),
        spec=spec,
        n_classes=2,
        batch_size=4,
        training=True,
        seed=1,
    )
    graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())
    batches = [node for node in graph.node if node.op == "BatchDatasetV2"]
    assert len(batches) == 1 and batches[0].attr["parallel_copy"].b
    assert sorted(int(x) for images, _ in ds for x in images[:, 0, 0, 0]) == list(range(6))
