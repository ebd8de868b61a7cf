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
from helpers import WAIT_S, communicate, free_ports, make_tree, train_command, write_config
from s3_server import S3Server, upload_tree

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
    server = S3Server(work / "moto.log")
    try:
        fs = server.filesystem()
        fs.mkdir(BUCKET)
        tree = make_tree(work / "tree", n_classes=N_CLASSES, n_train=N_TRAIN, n_test=N_TEST)
        upload_tree(fs, tree, f"{BUCKET}/data")
        yield server
    finally:
        server.stop()


def start_s3_workers(s3, config, out: str, work) -> list[subprocess.Popen]:
    """Two `cnnclf train` workers on free local ports, each with its own cache folder."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    workers = []
    for index in range(2):
        env = s3.env(
            CNNCLF_CACHE_DIR=str(work / f"cache{index}"),
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        command = train_command(config, out, "--set", "train.distribute=multi_worker")
        workers.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    return workers


def cached(work, index: int, split: str) -> set[str]:
    """The image keys (relative to the bucket) in worker `index`'s cache."""
    root = work / f"cache{index}" / "objects" / "s3" / BUCKET
    return {
        p.relative_to(root).as_posix()
        for p in (root / "data" / split).rglob("*")
        if p.suffix in IMAGES
    }


def test_two_workers_train_from_s3_each_on_its_own_shard(s3, tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path, train={"epochs": 1, "seed": 3})
    text = config.read_text().replace(
        str(tmp_path / "training_set"), f"s3://{BUCKET}/data/training_set"
    )
    config.write_text(text.replace(str(tmp_path / "test_set"), f"s3://{BUCKET}/data/test_set"))
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
