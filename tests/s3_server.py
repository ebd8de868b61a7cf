"""A real S3 API on 127.0.0.1 for the storage tests: moto's standalone server in a child process.

A child process rather than moto's in-process mock: cnnclf's own child processes (the CLI
under test) must reach it over HTTP, exactly as they would reach S3. Its request log (one
line per request, werkzeug's) is how the tests count what was read.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from helpers import free_port

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class S3Server:
    """`python -m moto.server` on a free port; `env` points boto/s3fs at it."""

    def __init__(self, log_path: Path, *, auth: bool = False) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ}
        if auth:  # every request is authenticated: unknown keys are refused (403)
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log_path.read_text()
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not start: {log_path.read_text()}")

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a child process needs to use this server as S3."""
        return {
            **os.environ,
            **KEYS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            **extra,
        }

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(
            key=KEYS["AWS_ACCESS_KEY_ID"],
            secret=KEYS["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
        )

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def object_reads(self, bucket: str, since: int = 0, suffixes=(".png", ".jpg", ".gif")):
        """GET requests for objects (not listings) in `bucket` logged after byte `since`."""
        text = self.log_path.read_bytes()[since:].decode("utf-8", "replace")
        keys = re.findall(rf'"GET /{re.escape(bucket)}/(\S+) HTTP', text)
        return [k for k in keys if k.split("?")[0].lower().endswith(suffixes)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def upload_tree(fs, local: Path, url: str) -> None:
    """Copies every file under `local` to `url` (a bucket prefix)."""
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{url.rstrip('/')}/{path.relative_to(local).as_posix()}")


def serving_tree(work: Path, bucket: str, tree: Path) -> Iterator[S3Server]:
    """A module fixture's body: the server, with `bucket` holding `tree` under data/,
    stopped when the fixture ends."""
    server = S3Server(work / "moto.log")
    try:
        fs = server.filesystem()
        fs.mkdir(bucket)
        upload_tree(fs, tree, f"{bucket}/data")
        yield server
    finally:
        server.stop()
