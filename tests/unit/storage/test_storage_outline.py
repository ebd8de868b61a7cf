"""multi_worker from a URL: every worker discovers the same data set from the listing alone
(storage/outline.py) and fetches only its own training shard (training/shards.py), against
fsspec's in-memory file system. The two-process run against an S3 server is in
tests/test_storage_multiworker.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

fsspec = pytest.importorskip("fsspec")

from cnnclf.config import Config  # noqa: E402
from cnnclf.config.schema import DataConfig, TrainConfig  # noqa: E402
from cnnclf.data.layout import Dataset, Split, discover  # noqa: E402
from cnnclf.errors import ConfigError, DataError  # noqa: E402
from cnnclf.storage import mirror, mirroring  # noqa: E402
from cnnclf.storage.outline import outline  # noqa: E402
from cnnclf.training.distribute import shard_indices, worker_of  # noqa: E402
from cnnclf.training.shards import Shard, check_same_data, training_data  # noqa: E402


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """memory://<bucket>/data/{cat,dog}/ with 5 and 4 objects, and a cache of this test's own."""
    monkeypatch.setenv(mirroring.CACHE_ENV, str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    root = f"/b{tmp_path.name}"
    for name, n in (("cat", 5), ("dog", 4)):
        for i in range(n):
            fs.pipe_file(f"{root}/data/{name}/{i}.png", f"{name}{i}".encode() * (i + 1))
    yield fs, f"memory://{root.lstrip('/')}"
    fs.rm(root, recursive=True)


def cached_images(tmp_path: Path) -> list[str]:
    objects = tmp_path / "cache" / "objects"
    return sorted(p.relative_to(objects).as_posix() for p in objects.rglob("*.png"))


def multi_worker(data: DataConfig) -> Config:
    return Config(data=data, train=TrainConfig(distribute="multi_worker", seed=3))


def tf_config(index: int, workers: int = 2, chief: bool = False) -> str:
    cluster = {"worker": [f"127.0.0.1:{2000 + i}" for i in range(workers - chief)]}
    if chief:
        cluster["chief"] = ["127.0.0.1:1999"]
    task = {"type": "chief", "index": 0} if chief and index == 0 else None
    task = task or {"type": "worker", "index": index - chief}
    return json.dumps({"cluster": cluster, "task": task})


def test_workers_are_numbered_alike_everywhere():
    assert [worker_of(tf_config(i)) for i in range(2)] == [(0, 2), (1, 2)]
    assert [worker_of(tf_config(i, 3, chief=True)) for i in range(3)] == [(0, 3), (1, 3), (2, 3)]
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        worker_of(None)
    evaluator = json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator"}})
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        worker_of(evaluator)


@pytest.mark.parametrize("count, workers", [(9, 2), (10, 2), (7, 3), (2, 3)])
def test_shards_are_disjoint_cover_everything_and_are_equally_long(count, workers):
    shards = [shard_indices(count, w, workers) for w in range(workers)]
    distinct = [set(s) for s in shards]
    assert set().union(*distinct) == set(range(count))
    assert sum(len(s) for s in distinct) == count  # disjoint
    non_empty = [s for s in shards if s]
    assert len({len(s) for s in non_empty}) == 1  # the same steps per epoch
    assert all(len(s) - len(set(s)) <= 1 for s in shards)  # at most one file repeated


def test_the_outline_finds_what_the_mirror_finds_without_fetching_an_image(bucket, tmp_path):
    _, url = bucket
    data = DataConfig(train_dir=f"{url}/data", validation_split=0.25)
    with outline(data) as drawn:
        stand_ins = Path(drawn.data.train_dir or "")
        assert stand_ins.is_dir() and cached_images(tmp_path) == []
        found = discover(drawn.data, seed=3)
        train = [drawn.local(p) for p in found.train.paths]
        validation = [drawn.local(p) for p in found.validation.paths]
        stats = drawn.fetch(validation)
    assert not stand_ins.exists()  # nothing of the outline is left behind
    assert stats.fetched == len(validation) == 2 and len(cached_images(tmp_path)) == 2
    whole = discover(dataclasses.replace(data, train_dir=str(mirror(data.train_dir))), seed=3)
    assert (whole.train.paths, whole.validation.paths) == (train, validation)
    assert whole.train.labels == found.train.labels


def test_each_worker_fetches_only_its_shard(bucket, tmp_path, monkeypatch):
    _, url = bucket
    config = multi_worker(DataConfig(train_dir=f"{url}/data", validation_split=0.25))
    shards = []
    for index in range(2):
        monkeypatch.setenv("TF_CONFIG", tf_config(index))
        whole, shard = training_data(config)
        shards.append(shard.train.paths)
        assert whole.validation == shard.validation and len(whole.train) == 7
        fetched = {str(tmp_path / "cache" / "objects" / p) for p in cached_images(tmp_path)}
        assert fetched == set(shard.train.paths) | set(shard.validation.paths)
        for path in fetched:  # the next worker starts from an empty cache, as on its machine
            Path(path).unlink()
    assert [len(s) for s in shards] == [4, 4]  # 7 files: worker 1 repeats one of its 3
    assert set(shards[0]).isdisjoint(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(whole.train.paths)


def test_a_label_file_is_fetched_and_its_rows_are_sharded(bucket, tmp_path, monkeypatch):
    fs, url = bucket
    root = url.removeprefix("memory://")
    rows = [f"{c}/{i}.png,{c}" for c, n in (("cat", 5), ("dog", 4)) for i in range(n)]
    fs.pipe_file(f"/{root}/data/train.csv", ("path,label\n" + "\n".join(rows[1:8])).encode())
    fs.pipe_file(f"/{root}/data/test.csv", ("path,label\n" + "\n".join(rows[::8])).encode())
    config = multi_worker(
        DataConfig(train_dir=f"{url}/data/train.csv", test_dir=f"{url}/data/test.csv")
    )
    monkeypatch.setenv("TF_CONFIG", tf_config(1))
    whole, shard = training_data(config)
    assert whole.class_names == ["cat", "dog"] and len(whole.train) == 7
    assert len(whole.validation) == 2 and len(shard.train) == 4
    assert whole.labels_from["train_dir"]["file"].startswith(str(tmp_path / "cache"))
    assert sorted(cached_images(tmp_path)) == sorted(
        str(Path(p).relative_to(tmp_path / "cache" / "objects"))
        for p in {*shard.train.paths, *whole.validation.paths}
    )


def test_layout_errors_name_cache_paths_not_the_outline(bucket, tmp_path, monkeypatch):
    fs, url = bucket
    root = url.removeprefix("memory://")
    fs.pipe_file(f"/{root}/data/bird/readme.csv", b"")  # a class folder without images
    monkeypatch.setenv("TF_CONFIG", tf_config(0))
    with pytest.raises(DataError) as caught:
        training_data(multi_worker(DataConfig(train_dir=f"{url}/data")))
    assert str(tmp_path / "cache") in str(caught.value) and "outline" not in str(caught.value)


def test_fewer_training_images_than_workers_stop_before_anything_is_fetched(
    bucket, tmp_path, monkeypatch
):
    _, url = bucket
    config = multi_worker(DataConfig(train_dir=f"{url}/data", validation_split=0.25))
    monkeypatch.setenv("TF_CONFIG", tf_config(7, workers=8))  # 7 training images, 8 workers
    with pytest.raises(ConfigError) as caught:
        training_data(config)
    message = str(caught.value)
    assert message.startswith("train.distribute: multi_worker: 7 training images for 8 workers")
    assert "\n" not in message and cached_images(tmp_path) == []
    monkeypatch.setenv("TF_CONFIG", tf_config(6, workers=7))  # one image each is enough
    assert len(training_data(config)[1].train) == 1


def test_skip_reasons_name_the_cache_not_the_outline(bucket, tmp_path, monkeypatch):
    fs, url = bucket
    root = url.removeprefix("memory://")
    rows = "path,label\ncat/0.png,cat\ncat/9.png,cat\n" + "".join(
        f"{c}/{i}.png,{c}\n" for c in ("cat", "dog") for i in range(1, 4)
    )
    fs.pipe_file(f"/{root}/data/train.csv", rows.encode())
    monkeypatch.setenv("TF_CONFIG", tf_config(0))
    whole, shard = training_data(multi_worker(DataConfig(train_dir=f"{url}/data/train.csv")))
    label_file = str(tmp_path / "cache" / "objects" / "memory" / root / "data" / "train.csv")
    missing = str(Path(label_file).parent / "cat" / "9.png")
    assert (
        shard.skipped
        == whole.skipped
        == {missing: f"listed on {label_file} row 2, but does not exist"}
    )
    assert whole.labels_from["train_dir"]["file"] == label_file


def test_workers_share_a_digest_of_the_whole_set_that_a_late_upload_changes(
    bucket, tmp_path, monkeypatch
):
    fs, url = bucket
    config = multi_worker(DataConfig(train_dir=f"{url}/data", validation_split=0.25))

    def worker(index: int, cache: str) -> Shard:
        monkeypatch.setenv("TF_CONFIG", tf_config(index))
        monkeypatch.setenv(mirroring.CACHE_ENV, str(tmp_path / cache))  # a machine of its own
        shard = training_data(config)[1]
        assert isinstance(shard, Shard)
        return shard

    first, second = worker(0, "cache0"), worker(1, "cache1")
    assert first.whole_digest == second.whole_digest != ""
    fs.pipe_file(f"/{url.removeprefix('memory://')}/data/dog/9.png", b"late")
    late = worker(1, "cache2")
    assert late.whole_digest != first.whole_digest
    assert set(late.train.paths) & set(second.train.paths) != set(second.train.paths)


def test_different_digests_stop_the_run_with_one_line(monkeypatch):
    from cnnclf.training import distribute

    answers: list[bytes] = []
    monkeypatch.setattr(distribute, "workers_agree", lambda _, d: answers.append(d) or False)
    dataset = Dataset(["a", "b"], Split([], []), Split([], []))
    check_same_data(None, dataset, "s3://bkt/data")  # not a shard: no collective op at all
    assert answers == []
    shard = Shard(["a", "b"], Split([], []), Split([], []), whole_digest="00ff" * 8)
    with pytest.raises(DataError) as caught:
        check_same_data(None, shard, "s3://bkt/data")
    assert answers == [bytes.fromhex("00ff" * 8)]
    assert str(caught.value) == (
        "data.train_dir: workers listed different contents of s3://bkt/data: do not change "
        "the data while a run starts; run again"
    )
