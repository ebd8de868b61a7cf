"""A real `cnnclf serve` under attack by idle and slow clients, in a process whose open-file
limit is too low for them all: health checks and predictions still answer within a second, the
attackers are closed after --header-timeout/--body-timeout, and the log stays a few lines.

Before connections.py, 1,100 header-less connections under `ulimit -n 1024` made every
/healthz time out and wrote megabytes of `socket.accept() out of system resource` a second.
"""

from __future__ import annotations

import asyncio
import io
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import WAIT_S, communicate, free_port, wait_for
from PIL import Image

pytestmark = pytest.mark.slow  # trains a model and starts a server

OPEN_FILES = 256  # fits 116 connections (serve/connections.py's plan_open_files)
IDLE, SLOW_HEAD, SLOW_BODY = 300, 20, 10  # 330 attackers: more than the cap and the limit
TIMEOUT_S = 2.0  # --header-timeout and --body-timeout
PROBE_ROUNDS = 8  # a /healthz and a /predict every 0.25 s while the attackers are connected


def _limited_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


def start_limited_server(model, log_path, *args):
    """(process, port) of `cnnclf serve` under an open-file limit of OPEN_FILES, once ready;
    its console goes to `log_path` (a pipe nobody reads could fill and stall it)."""
    port = free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cnnclf.cli", "serve", "--model", str(model)]
            + ["--port", str(port), *args],
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=_limited_open_files,
        )

    def ready():
        assert process.poll() is None, log_path.read_text()
        try:
            status, _ = asyncio.run(request(port, get("/readyz", port), timeout=5))
        except (TimeoutError, OSError):
            return False
        return status == 200

    wait_for(ready, "the server's /readyz to answer 200", poll=0.2)
    return process, port


def get(path: str, port: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()


def post_image(port: int, image: bytes) -> bytes:
    boundary = "cnnclf-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def request(port: int, raw: bytes, timeout: float = WAIT_S) -> tuple[int, float]:
    """(status, seconds) of one request on a new connection."""
    start = time.monotonic()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else 0
    return status, time.monotonic() - start


async def attacker(port: int, kind: str, closed: list, stop: asyncio.Event) -> None:
    """One idle or slow client: sends nothing, or a head or body a byte every half second,
    until the server closes the connection; appends when that happened to `closed`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    if kind == "head":
        drip = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    elif kind == "body":
        writer.write(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n"
        )
        drip = b"x" * 100
    else:
        drip = b""

    async def send_slowly():
        for byte in drip:
            if stop.is_set():
                return
            writer.write(bytes([byte]))
            await asyncio.sleep(0.5)

    sender = asyncio.create_task(send_slowly())
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass  # closed by the server before its answer was read
    closed.append(time.monotonic() - start)
    sender.cancel()
    writer.close()


def server_sockets(pid: int) -> int:
    """Sockets the server process holds open (its listening one and asyncio's self-pipe too)."""
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd).startswith("socket:"))


async def attack_and_probe(port: int, image: bytes, pid: int):
    """(probe results, seconds the attackers the server closed had stayed connected, the most
    connections the server held, and those it still held after the timeouts)."""
    closed: list[float] = []
    stop = asyncio.Event()
    calm = server_sockets(pid)
    kinds = ["idle"] * IDLE + ["head"] * SLOW_HEAD + ["body"] * SLOW_BODY
    attackers = [asyncio.create_task(attacker(port, kind, closed, stop)) for kind in kinds]
    await asyncio.sleep(0.2)
    probes, most = [], 0
    for _ in range(PROBE_ROUNDS):
        most = max(most, server_sockets(pid) - calm)
        probes.append(("healthz", *await request(port, get("/healthz", port), timeout=10)))
        probes.append(("predict", *await request(port, post_image(port, image), timeout=10)))
        await asyncio.sleep(0.25)
    # Every attacker the server holds is closed by its timeout (plus margin for a loaded
    # machine). Some never reach it: past the short listen queue the kernel drops their
    # handshake's last packet, and an idle client cannot tell.
    deadline = time.monotonic() + TIMEOUT_S + 10
    while server_sockets(pid) > calm and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    left = server_sockets(pid) - calm
    stop.set()
    for task in attackers:
        task.cancel()
    await asyncio.gather(*attackers, return_exceptions=True)
    return probes, closed, most, left


def test_idle_and_slow_clients_cannot_starve_health_checks_or_predictions(binary_bundle, tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (200, 40, 40)).save(buffer, "PNG")
    log_path = tmp_path / "serve.log"
    timeouts = ["--header-timeout", str(TIMEOUT_S), "--body-timeout", str(TIMEOUT_S)]
    process, port = start_limited_server(binary_bundle, log_path, *timeouts)
    try:
        probes, closed, most, left = asyncio.run(
            asyncio.wait_for(attack_and_probe(port, buffer.getvalue(), process.pid), 120)
        )
        process.send_signal(signal.SIGTERM)
        communicate(process, "the server to stop after the attack")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    console = log_path.read_text()
    assert [(name, status) for name, status, _ in probes if status != 200] == [], console
    slowest = max(seconds for _, _, seconds in probes)
    assert slowest < 1.0, (probes, console)  # the goal: never a wait over a second
    # The cap, and connections accepted in one go and those closed to make room for them:
    # within the open-file limit, with 330 clients at the door (plan_open_files: backlog 38).
    assert most <= 116 + 2 * 38 + 1, most
    assert left == 0, left  # every attacker it held was closed
    assert len(closed) >= 116 and max(closed) < TIMEOUT_S + 10, sorted(closed)[-5:]
    assert "warning: --max-connections 1000: the open-file limit (256) allows 116" in console
    assert console.count("out of system resource") <= 1, console[:2000]
    assert "Traceback" not in console and len(console) < 20_000, console[:2000]
    assert process.returncode == 0, console
