"""Data and bundles on object storage, against a real S3 API: moto's server on 127.0.0.1.

Every cnnclf command runs as a child process that reaches the server over HTTP through
AWS_ENDPOINT_URL, as it would reach S3. Reads are counted from the server's request log: one
`GET /bucket/key` line per object read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_tree, write_config
from PIL import Image
from s3_server import S3Server, serving_tree

pytestmark = pytest.mark.slow

BUCKET = "cnnclf-test"
IMAGES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The server, with a bucket holding a small tree under data/."""
    work = tmp_path_factory.mktemp("s3")
    yield from serving_tree(work, BUCKET, make_tree(work / "tree"))


def cnnclf(*args, env, timeout=TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnnclf.cli", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def s3_config(tmp_path: Path, **sections) -> Path:
    config = write_config(tmp_path / "s3.yaml", tmp_path)
    import yaml

    tree = yaml.safe_load(config.read_text())
    tree["data"]["train_dir"] = f"s3://{BUCKET}/data/training_set"
    tree["data"]["test_dir"] = f"s3://{BUCKET}/data/test_set"
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    config.write_text(yaml.safe_dump(tree))
    return config


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """The failure's stderr: one line, no traceback, holding `words`."""
    assert result.returncode not in (0, None), result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(s3, tmp_path_factory):
    """A 3-epoch run from s3:// to s3://runs/b1, and the image objects it read."""
    work = tmp_path_factory.mktemp("trained")
    env = s3.env(CNNCLF_CACHE_DIR=str(work / "cache"))
    config = s3_config(work, train={"epochs": 3, "seed": 7})
    start = s3.log_offset()
    run = cnnclf("train", "--config", config, "--out", f"s3://{BUCKET}/runs/b1", env=env)
    assert run.returncode == 0, run.stderr
    return run, s3.object_reads(BUCKET, start, IMAGES), env, work


def test_train_s3_to_s3_reads_each_image_once(s3, trained):
    run, reads, _, _ = trained
    assert f"uploaded the bundle to s3://{BUCKET}/runs/b1" in run.stderr
    # 32 images in the bucket, each read once over 3 epochs: epochs 2 and 3 read 0 bytes.
    assert len(reads) == len(set(reads)) == 32, reads
    marker = s3.filesystem().cat_file(f"{BUCKET}/runs/b1/_COMPLETE").decode()
    assert len(marker) == 64  # the SHA-256 of the bundle's bundle.json


def test_a_second_run_reads_no_image_and_starts_from_an_s3_bundle(s3, trained):
    _, _, env, work = trained
    config = s3_config(work, model={"init_from": f"s3://{BUCKET}/runs/b1"})
    start = s3.log_offset()
    again = cnnclf("train", "--config", config, "--out", work / "b2", env=env)
    assert again.returncode == 0, again.stderr
    data_reads = [k for k in s3.object_reads(BUCKET, start, IMAGES) if k.startswith("data/")]
    assert data_reads == []  # listings only: the cache is used (runs/b1 itself is downloaded)
    assert "runs/b1" in (work / "b2" / "config.yaml").read_text()  # the URL, not the cache


def test_predict_from_s3_model_and_inputs(trained):
    _, _, env, _ = trained
    predicted = cnnclf(
        "predict", "--model", f"s3://{BUCKET}/runs/b1", "--format", "json",
        f"s3://{BUCKET}/data/test_set", env=env,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    assert len(json.loads(predicted.stdout)) == 8


def test_a_kill_during_upload_never_loads_and_a_re_run_completes_it(s3, tmp_path):
    env = s3.env(CNNCLF_CACHE_DIR=str(tmp_path / "cache"))
    config = s3_config(tmp_path)
    url = f"s3://{BUCKET}/runs/killed"
    command = ("train", "--config", config, "--out", url)
    killed = cnnclf(*command, env={**env, "CNNCLF_FAULT": "upload.file_written@2=kill"})
    assert killed.returncode == -9, killed.stderr
    fs = s3.filesystem()
    assert fs.find(f"{BUCKET}/runs/killed")  # some files are there ...
    assert not fs.exists(f"{BUCKET}/runs/killed/_COMPLETE")  # ... but no marker
    image = _an_image(s3, tmp_path)
    refused = cnnclf("predict", "--model", url, image, env=env)
    one_line_error(refused, url, "did not finish")

    again = cnnclf(*command, env=env)  # the same command: uploads, does not train again
    assert again.returncode == 0, again.stderr
    assert "uploading the bundle built earlier" in again.stderr
    assert "Epoch" not in again.stdout + again.stderr
    assert cnnclf("predict", "--model", url, image, env=env).returncode == 0


def _an_image(s3, tmp_path: Path) -> Path:
    fs = s3.filesystem()
    key = next(k for k in fs.find(f"{BUCKET}/data/test_set") if k.endswith(".png"))
    fs.get_file(key, str(tmp_path / "one.png"))
    return tmp_path / "one.png"


def test_storage_errors_are_one_line(s3, tmp_path):
    env = s3.env(CNNCLF_CACHE_DIR=str(tmp_path / "cache"))
    image = _an_image(s3, tmp_path)
    one_line_error(
        cnnclf("predict", "--model", "s3://no-such-bucket-here/b1", image, env=env),
        "no such bucket",
    )
    one_line_error(
        cnnclf("predict", "--model", f"s3://{BUCKET}/runs/none", image, env=env),
        "no bundle there",
    )
    no_keys = {
        k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    no_keys.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    one_line_error(
        cnnclf("predict", "--model", f"s3://{BUCKET}/runs/b1", image, env=no_keys),
        "no credentials",
    )
    config = s3_config(tmp_path)
    # botocore's own retries off (its standard variable): cnnclf's 4 tries are what is tested.
    down = {
        **env,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
        "AWS_MAX_ATTEMPTS": "1",
    }
    one_line_error(
        cnnclf("train", "--config", config, "--out", tmp_path / "b", env=down),
        "could not be reached",
        "4 tries",
    )
    fake = tmp_path / "no_extra" / "fsspec"  # an fsspec that cannot be imported
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named fsspec')\n")
    no_extra = {**env, "PYTHONPATH": str(fake.parent)}
    line = one_line_error(
        cnnclf("train", "--config", config, "--out", tmp_path / "b", env=no_extra),
        "pip install 'cnnclf[cloud]'",
    )
    assert "data.train_dir" in line or "s3://" in line


def test_access_denied_is_one_line(tmp_path):
    server = S3Server(tmp_path / "moto.log", auth=True)  # refuses the unknown test keys
    try:
        env = server.env(CNNCLF_CACHE_DIR=str(tmp_path / "cache"))
        image = tmp_path / "x.png"
        Image.new("RGB", (8, 8)).save(image)
        result = cnnclf("predict", "--model", f"s3://{BUCKET}/b1", image, env=env)
        one_line_error(result, "access denied")
    finally:
        server.stop()


@pytest.mark.skip(
    reason="no local GCS emulator installed (fake-gcs-server is a Go binary, not on PyPI); "
    "gs:// takes the same fsspec code path as s3://, through gcsfs"
)
def test_gcs_same_code_path():  # pragma: no cover
    pass


def _closed_port() -> int:
    from helpers import free_port

    return free_port()


def test_the_cache_is_only_a_cache(s3, trained, tmp_path):
    """Without the cache the same command fetches again, and succeeds."""
    _, _, env, work = trained
    image = _an_image(s3, tmp_path)
    url = f"s3://{BUCKET}/runs/b1"
    assert cnnclf("predict", "--model", url, image, env=env).returncode == 0
    shutil.rmtree(work / "cache")
    assert cnnclf("predict", "--model", url, image, env=env).returncode == 0
