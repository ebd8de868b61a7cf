"""multi_worker from s3:// to s3://: two local workers, each fetching only its own shard.

Each worker has a cache folder of its own, as it would on its own machine, so what a worker
fetched is what its cache holds; the moto server's request log counts the reads of all of them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from helpers import (
    WAIT_S,
    communicate,
    free_ports,
    make_tree,
    train_command,
    wait_for,
    write_config,
)
from s3_server import serving_tree, upload_tree

pytestmark = pytest.mark.slow

BUCKET = "cnnclf-shards"
IMAGES = (".png", ".jpg", ".bmp", ".gif")
# 3 classes x 7 training images: 21, so the shards are 11 and 10 (+1 repeated).
N_CLASSES, N_TRAIN, N_TEST = 3, 7, 3
FETCHED = re.compile(
    r"multi_worker: fetched (\d+) of (\d+) training images \(worker (\d) of 2's shard; "
    r"(\d+) of (\d+) bytes"
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    work = tmp_path_factory.mktemp("s3")
    tree = make_tree(work / "tree", n_classes=N_CLASSES, n_train=N_TRAIN, n_test=N_TEST)
    yield from serving_tree(work, BUCKET, tree)


def start_s3_worker(s3, config, out: str, work, cluster: dict, index: int) -> subprocess.Popen:
    """Worker `index` of `cluster`, a `cnnclf train` with its own cache folder."""
    env = s3.env(
        CNNCLF_CACHE_DIR=str(work / f"cache{index}"),
        TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
    )
    command = train_command(config, out, "--set", "train.distribute=multi_worker")
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def start_s3_workers(s3, config, out: str, work) -> list[subprocess.Popen]:
    """Two `cnnclf train` workers on free local ports, each with its own cache folder."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    return [start_s3_worker(s3, config, out, work, cluster, index) for index in range(2)]


def s3_config(work, prefix: str = "data"):
    """A one-epoch config whose training_set and test_set are under s3://BUCKET/PREFIX."""
    config = write_config(work / "c.yaml", work, train={"epochs": 1, "seed": 3})
    text = config.read_text()
    for split in ("training_set", "test_set"):
        text = text.replace(str(work / split), f"s3://{BUCKET}/{prefix}/{split}")
    config.write_text(text)
    return config


def cached(work, index: int, split: str, prefix: str = "data") -> set[str]:
    """The image keys (relative to the bucket) in worker `index`'s cache."""
    root = work / f"cache{index}" / "objects" / "s3" / BUCKET
    return {
        p.relative_to(root).as_posix()
        for p in (root / prefix / split).rglob("*")
        if p.suffix in IMAGES
    }


def test_two_workers_train_from_s3_each_on_its_own_shard(s3, tmp_path):
    config = s3_config(tmp_path)
    out = f"s3://{BUCKET}/runs/mw"
    start = s3.log_offset()
    workers = start_s3_workers(s3, config, out, tmp_path)
    errors = [
        communicate(w, "a multi-worker training run from s3://", 2 * WAIT_S)[1] for w in workers
    ]
    assert [w.returncode for w in workers] == [0, 0], errors
    assert "strategy: multi_worker; replicas: 2" in errors[0]
    assert f"uploaded the bundle to {out}" in errors[0]

    fs = s3.filesystem()
    listed = {k.split(f"{BUCKET}/", 1)[1] for k in fs.find(f"{BUCKET}/data")}
    training = {k for k in listed if k.startswith("data/training_set/")}
    test = {k for k in listed if k.startswith("data/test_set/")}
    assert len(training) == N_CLASSES * N_TRAIN and len(test) == N_CLASSES * N_TEST
    shards = [cached(tmp_path, i, "training_set") for i in range(2)]
    assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == training
    assert [len(s) for s in shards] == [11, 10]
    assert [cached(tmp_path, i, "test_set") for i in range(2)] == [test, test]  # whole
    # Every training image was read from the bucket once in all, by the worker whose it is.
    reads = [k for k in s3.object_reads(BUCKET, start, IMAGES) if k.startswith("data/")]
    assert sorted(k for k in reads if "training_set" in k) == sorted(training)

    sizes = {k: fs.size(f"{BUCKET}/{k}") for k in training}
    for index, (stderr, shard) in enumerate(zip(errors, shards)):
        found = FETCHED.search(stderr)
        assert found, stderr
        mine, total, worker, mine_bytes, all_bytes = map(int, found.groups())
        assert (mine, total, worker) == (len(shard), len(training), index)
        assert mine_bytes == sum(sizes[k] for k in shard) and all_bytes == sum(sizes.values())
        assert 0.35 < mine_bytes / all_bytes < 0.65  # about 1/2 of the training bytes
    assert "1 of them twice per epoch" in errors[1]

    assert fs.exists(f"{BUCKET}/runs/mw/_COMPLETE")
    predicted = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnclf.cli",
            "predict",
            "--model",
            out,
            "--format",
            "json",
            f"s3://{BUCKET}/data/test_set",
        ],
        env=s3.env(CNNCLF_CACHE_DIR=str(tmp_path / "cache-predict")),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert predicted.returncode == 0, predicted.stderr
    assert len(json.loads(predicted.stdout)) == N_CLASSES * N_TEST


def test_workers_that_listed_different_contents_all_stop_before_training(s3, tmp_path):
    """An image uploaded after worker 0 listed the bucket and before worker 1 did: their
    shards would overlap and differ in length; both stop with one line instead."""
    fs = s3.filesystem()
    tree = make_tree(tmp_path / "tree", n_classes=2, n_train=5, n_test=2)
    upload_tree(fs, tree, f"{BUCKET}/late")
    config, out = s3_config(tmp_path, "late"), f"s3://{BUCKET}/runs/late"
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    first = start_s3_worker(s3, config, out, tmp_path, cluster, 0)
    # Worker 0 fetches its shard only once it has listed the bucket.
    wait_for(lambda: cached(tmp_path, 0, "training_set", "late"), "worker 0's first fetch")
    image = next((tree / "training_set").rglob("*.png"))
    fs.put_file(str(image), f"{BUCKET}/late/training_set/{image.parent.name}/late.png")
    second = start_s3_worker(s3, config, out, tmp_path, cluster, 1)
    errors = [
        communicate(w, "a worker of a changed bucket", 2 * WAIT_S)[1] for w in (first, second)
    ]
    assert [w.returncode for w in (first, second)] == [2, 2], errors
    line = (
        f"workers listed different contents of s3://{BUCKET}/late/training_set: do not change "
        "the data while a run starts; run again"
    )
    for stderr in errors:
        assert line in stderr and "Traceback" not in stderr and "Epoch 1" not in stderr
    assert not fs.exists(f"{BUCKET}/runs/late/_COMPLETE")
