"""Plain helpers the tests share: image trees and configs made by code, the CLI in-process, the
bad-input corpus, a `cnnclf serve` process, and waiting on a condition with a named bound.

Fixtures live in conftest.py; everything here is an ordinary function or constant, imported with
`from helpers import ...`.

Each class has its own visual pattern (horizontal stripes, vertical stripes, a checkerboard),
written at mixed sizes in mixed formats (JPEG, PNG, BMP, GIF), so the pipeline sees what real
folders hold while a 1-epoch training run stays a couple of seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from cnnclf.cli import main

# Every wait in the suite is bounded so that a hang fails instead of stalling CI, and the bound
# is generous enough for a machine ten times slower than a loaded 2-core CI runner: a test
# waits for an event (a file, a line, a process), never for a span of time to pass.
WAIT_S = 300


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_S, poll=0.02):
    """Polls `condition()` until it returns something truthy, and returns that.

    Args:
        condition: called every `poll` seconds; may raise to stop waiting early.
        what: what is awaited, in words ("the first epoch's checkpoint"); the failure names it.
        timeout: seconds before the test fails; a bound against hangs, not a speed claim.

    Example: `wait_for(lambda: (out / "progress.json").exists(), "the first epoch saved")`
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}; it never happened")
        time.sleep(poll)


def communicate(process: subprocess.Popen, what: str, timeout: float = WAIT_S):
    """`process.communicate()` bounded by `timeout`; on a hang kills it and fails naming `what`."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"waited {timeout:g} s for {what} to exit; it never did\n{err}")


def run_process(command: list, what: str, timeout: float = WAIT_S, **kwargs):
    """`subprocess.run(command, capture_output=True, text=True)`, failing with `what` on a hang."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        pytest.fail(f"waited {timeout:g} s for {what} to exit; it never did")


PATTERNS = ("hstripes", "vstripes", "checker")
FORMATS = ("jpg", "png", "bmp", "gif")


def pattern_image(kind: str, height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    period = max(2, min(height, width) // 4)
    if kind == "hstripes":
        base = (y // period) % 2
    elif kind == "vstripes":
        base = (x // period) % 2
    else:
        base = ((y // period) + (x // period)) % 2
    pixels = base * 180 + 40 + rng.integers(0, 30, size=(height, width))
    rgb = np.stack([pixels, pixels * 0.8, pixels * 0.6], axis=-1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def make_tree(
    root: Path, n_classes: int = 2, n_train: int = 12, n_test: int = 4, with_test: bool = True
) -> Path:
    """Writes root/training_set/<class>/* and root/test_set/<class>/*; returns root."""
    splits = [("training_set", n_train)] + ([("test_set", n_test)] if with_test else [])
    for split, count in splits:
        for c in range(n_classes):
            kind = PATTERNS[c]
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                size = 20 + (i * 7) % 29  # mixed sizes, 20-48 px, not square
                # Different seeds per split: no image may be in both (check-data flags leakage).
                seed = i + 100 * c + (1000 if split == "test_set" else 0)
                image = pattern_image(kind, size, size + (i % 3) * 5, seed=seed)
                fmt = FORMATS[i % len(FORMATS)]
                path = folder / f"{kind}_{i:03d}.{fmt}"
                if fmt == "gif":
                    image.convert("P").save(path)
                else:
                    image.save(path)
    return root


def write_config(path: Path, tree: Path, **sections) -> Path:
    """A tiny, fast config for `tree`; keyword arguments update whole sections."""
    config = {
        "data": {
            "train_dir": str(tree / "training_set"),
            "test_dir": str(tree / "test_set"),
            "image_size": [16, 16],
            "batch_size": 8,
        },
        "augment": {
            "rescale": "1/255",
            "shear_range": 0.2,
            "zoom_range": 0.2,
            "horizontal_flip": True,
        },
        "model": {
            "conv_blocks": [{"filters": 4, "kernel_size": 3, "pool_size": 2}],
            "dense_units": [8],
        },
        "train": {"epochs": 1, "seed": 7},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path | None = None):
    """Invokes `cnnclf` in-process (TensorFlow is imported once per test session)."""
    runner = CliRunner()
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(old)


def train_bundle(work: Path, tree: Path) -> Path:
    """Trains a 1-epoch bundle on `tree` through the CLI; returns its folder."""
    config = write_config(work / "tiny.yaml", tree)
    result = run_cli("train", "--config", config, "--out", work / "bundle")
    assert result.exit_code == 0, result.output
    return work / "bundle"


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------
# The bad-input corpus: one file per kind of trouble real folders hold.


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: a decompression bomb's signature."""
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def write_bad_case(case: str, folder: Path) -> Path:
    """Writes one bad-input case into `folder`; returns the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    good = pattern_image("hstripes", 40, 40, seed=99)
    if case == "truncated_jpeg":
        path = folder / "truncated.jpg"
        buffer = io.BytesIO()
        good.save(buffer, "JPEG", quality=95)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    elif case == "text_as_jpeg":
        path = folder / "notes.jpg"
        path.write_text("this is not an image")
    elif case == "empty_file":
        path = folder / "empty.png"
        path.write_bytes(b"")
    elif case == "decompression_bomb":
        path = folder / "bomb.png"
        path.write_bytes(_png_claiming(30000, 30000))
    elif case == "png_named_jpg":
        path = folder / "really_png.jpg"
        good.save(path, "PNG")
    elif case == "cmyk_jpeg":
        path = folder / "scanner.jpg"
        good.convert("CMYK").save(path, "JPEG")
    elif case == "rgba_png":
        path = folder / "screenshot.png"
        rgba = good.convert("RGBA")
        rgba.putalpha(128)
        rgba.save(path)
    elif case == "sixteen_bit_png":
        path = folder / "scan16.png"
        Image.fromarray(np.asarray(good.convert("L"), np.uint16) * 257).save(path)
    elif case == "palette_gif":
        path = folder / "palette.gif"
        palette = good.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        palette.save(path, transparency=palette.getpixel((0, 0)))  # an index in use
    elif case == "exif_rotated":
        path = folder / "phone.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6
        good.save(path, exif=exif.tobytes())
    elif case == "tiny_image":
        path = folder / "tiny.png"
        good.resize((4, 4)).save(path)
    elif case == "ds_store":
        path = folder / ".DS_Store"
        path.write_bytes(b"\x00\x00\x00\x01Bud1")
    elif case == "thumbs_db":
        path = folder / "Thumbs.db"
        path.write_bytes(b"\xd0\xcf\x11\xe0")
    elif case == "appledouble":
        path = folder / "._phone.jpg"
        path.write_bytes(b"\x00\x05\x16\x07AppleDouble")
    else:
        raise ValueError(case)
    return path


# Files training must skip (and predict must report), and odd files both must read.
UNREADABLE = ["truncated_jpeg", "text_as_jpeg", "empty_file", "decompression_bomb"]
ODD_BUT_READABLE = [
    "png_named_jpg",
    "cmyk_jpeg",
    "rgba_png",
    "sixteen_bit_png",
    "palette_gif",
    "exif_rotated",
    "tiny_image",
]
IGNORED = ["ds_store", "thumbs_db", "appledouble"]


# ------------------------------------------------------------------------------------------
# Hostile entries: what a data folder can hold that is not an image file at all.


def write_large_png(path: Path, width: int, height: int) -> Path:
    """A flat RGBA PNG of `width` x `height` written row by row, so the test process never holds
    its pixels: a few hundred KB on disk that decode to width * height * 4 bytes."""
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes([200, 100, 50, 128]) * width
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return Path(path)


def write_hostile_entry(case: str, folder: Path) -> Path:
    """Writes one entry that is no regular image file into `folder`; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    if case == "fifo":
        path = folder / "fifo.png"
        os.mkfifo(path)
    elif case == "device_link":
        path = folder / "zero.png"
        path.symlink_to("/dev/zero")
    elif case == "dangling_link":
        path = folder / "gone.png"
        path.symlink_to(folder / "never_existed.png")
    elif case == "loop_link":
        path = folder / "loop"
        path.symlink_to(".")  # the folder itself: walking it naively never ends
    else:
        raise ValueError(case)
    return path


HOSTILE = ["fifo", "device_link", "dangling_link", "loop_link"]


@contextlib.contextmanager
def peak_memory_mb():
    """Traces Python's allocations inside the block; yields a function giving their peak in MB.

    A resource bound, unlike a stopwatch, reads the same on a fast and a loaded machine.
    """
    tracemalloc.start()
    peak = [0.0]
    try:
        yield lambda: peak[0]
    finally:
        peak[0] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()


# ------------------------------------------------------------------------------------------
# A real `cnnclf serve` process.


def free_port() -> int:
    return free_ports(1)[0]


def _ready(process: subprocess.Popen, url: str) -> bool:
    assert process.poll() is None, process.communicate()
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


def start_server(model, *args):
    """(process, base URL) of `cnnclf serve`, once /readyz answers 200."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cnnclf.cli",
            "serve",
            "--model",
            str(model),
            "--port",
            str(port),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ready(process, url), "the server's /readyz to answer 200", poll=0.2)
    return process, url


# ------------------------------------------------------------------------------------------
# A multi-worker training cluster of two local processes.


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free now (all bound at once, so no two are the same)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def train_command(config, out, *extra) -> list[str]:
    """`cnnclf train --config CONFIG --out OUT EXTRA...` as a child process runs it."""
    command = [sys.executable, "-m", "cnnclf.cli", "train", "--config", str(config)]
    return [*command, "--out", str(out), *extra]


def start_workers(config: Path, out: Path, *overrides: str):
    """Two `cnnclf train` processes forming a multi-worker cluster on free local ports."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        command = train_command(config, out, "--set", "train.distribute=multi_worker")
        for o in overrides:
            command += ["--set", o]
        workers.append(
            subprocess.Popen(
                command,
                env={**os.environ, "TF_CONFIG": tf_config},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return workers
