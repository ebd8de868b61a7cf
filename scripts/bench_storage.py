#!/usr/bin/env python3
"""First-epoch reads from a local S3 server against the same images on local disk, side by side.

What the first epoch of a run from s3:// costs beyond one from a local folder: the images are
mirrored into the cache (listed once, fetched by 16 threads) before discovery, then decoded
exactly as local files are. Both sides are timed in one run on the same images: reading the
bytes (local: from the page cache, warmed first, so the disk's own speed is left out), and
reading plus decoding with cnnclf's decoder (what the first epoch does with each image). The
S3 server is moto's, on 127.0.0.1: no network latency, so the ratio is the client's overhead
(HTTP, signing, s3fs), a floor for what a real bucket costs; a second mirror of the same bucket
shows the later runs' cost (a listing, no object read).

    python scripts/bench_storage.py --images 2000 --size 128   # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnnclf import storage  # noqa: E402
from cnnclf.data.decode import ImageSpec, load_image  # noqa: E402
from cnnclf.storage import mirroring  # noqa: E402

BUCKET = "bench"


def write_images(folder: Path, count: int, size: int) -> int:
    """`count` JPEG photos-like images in two class folders; returns their bytes."""
    rng = np.random.default_rng(0)
    total = 0
    for i in range(count):
        path = folder / f"class{i % 2}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((size, size), Image.BICUBIC).save(path, quality=90)
        total += path.stat().st_size
    return total


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit(f"moto server did not start: {log.read_text()}")


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def read_all(paths: list[Path]) -> None:
    for path in paths:
        path.read_bytes()


def decode_all(paths: list[Path], spec: ImageSpec, threads: int) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda p: load_image(str(p), spec), paths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128, help="side of each JPEG, pixels")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="decoders")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_storage_"))
    server, endpoint = start_moto(work / "moto.log")
    try:
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
            AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION="us-east-1",
            CNNCLF_CACHE_DIR=str(work / "cache"),
        )  # fmt: skip
        local = work / "local"
        total = write_images(local, args.images, args.size)
        paths = sorted(local.rglob("*.jpg"))
        fs, _ = storage.urls.filesystem(f"s3://{BUCKET}")
        fs.mkdir(BUCKET)
        fs.put(str(local) + "/", f"{BUCKET}/data/", recursive=True)
        read_all(paths)  # the page cache warm: the local side is the best case
        spec = ImageSpec((64, 64), "rgb", "bilinear")
        local_read = timed(lambda: read_all(paths))
        local_epoch = timed(lambda: decode_all(paths, spec, args.threads))

        stats = storage.MirrorStats()
        mirrored: list[Path] = []
        s3_read = timed(lambda: mirrored.append(storage.mirror(f"s3://{BUCKET}/data", None, stats)))
        cached = sorted(mirrored[0].rglob("*.jpg"))
        s3_epoch = s3_read + timed(lambda: decode_all(cached, spec, args.threads))
        again = storage.MirrorStats()
        relist = timed(lambda: storage.mirror(f"s3://{BUCKET}/data", None, again))
        mb = total / 1e6
        print(f"{args.images} JPEGs, {args.size}x{args.size}, {mb:.1f} MB; "
              f"{mirroring.THREADS} fetch threads, {args.threads} decode threads")  # fmt: skip
        print(f"{'':34}{'seconds':>9}{'images/s':>10}{'MB/s':>8}")
        for name, seconds in (
            ("read bytes, local disk (cached)", local_read),
            ("read bytes, S3 (moto, 127.0.0.1)", s3_read),
            ("first epoch's input, local", local_epoch),
            ("first epoch's input, S3", s3_epoch),
            ("later runs, S3 (listing only)", relist),
        ):
            print(f"{name:34}{seconds:9.2f}{args.images / seconds:10.0f}{mb / seconds:8.1f}")
        print(f"ratio, reading bytes: S3 takes {s3_read / local_read:.0f}x local disk")
        print(f"ratio, first epoch's input (read + decode): S3 {s3_epoch / local_epoch:.2f}x local")
        print(f"objects fetched: {stats.fetched}; on the second mirror: {again.fetched}")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
