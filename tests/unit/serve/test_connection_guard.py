"""serve/connections.py: the open-file plan and the log filters (fast), and the guarded protocol
driven by real sockets against an in-process uvicorn server with a tiny ASGI app (slow: it
starts a server, but no model and no TensorFlow)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import pytest

from cnnclf.serve.connections import (
    BACKLOG,
    AcceptErrorLog,
    CancelledRequestLog,
    plan_open_files,
    raw_error,
)
from cnnclf.serve.settings import ServeSettings

# ------------------------------------------------------------------------------------------
# The open-file plan.


def test_an_ample_limit_is_left_alone():
    plan = plan_open_files(1000, 1_048_576, 1_048_576)
    assert (plan.soft_limit, plan.max_connections, plan.backlog) == (1_048_576, 1000, BACKLOG)
    assert plan.warning is None


def test_a_low_soft_limit_is_raised_towards_the_hard_one():
    plan = plan_open_files(1000, 1024, 524_288)
    assert plan.soft_limit >= 1000 + 2 * BACKLOG and plan.soft_limit <= 524_288
    assert (plan.max_connections, plan.backlog, plan.warning) == (1000, BACKLOG, None)
    assert plan_open_files(1000, 1024, -1).soft_limit >= 1000 + 2 * BACKLOG  # RLIM_INFINITY


def test_a_low_hard_limit_lowers_the_cap_and_says_so():
    # `ulimit -n 1024` sets both limits: the scenario in which 1,100 idle connections took
    # every descriptor and /healthz timed out.
    plan = plan_open_files(1000, 1024, 1024)
    assert plan.soft_limit == 1024
    # Room for the connections, a burst of accepts, as many closing, and the process's files.
    assert plan.max_connections + 2 * plan.backlog + 64 <= 1024
    assert plan.max_connections >= 512 and plan.backlog >= 128
    assert plan.warning == (
        f"warning: --max-connections 1000: the open-file limit (1024) allows "
        f"{plan.max_connections}; serving at most {plan.max_connections} (raise it with ulimit -n)"
    )


def test_a_cap_that_fits_is_kept_with_a_shorter_backlog():
    plan = plan_open_files(100, 1024, 1024)
    assert (plan.max_connections, plan.warning) == (100, None)
    assert plan.backlog < BACKLOG


# ------------------------------------------------------------------------------------------
# Log lines.


def _record(msg: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, (), exc_info)


def test_accept_errors_are_one_line_a_second_at_most():
    now = [100.0]
    log_filter = AcceptErrorLog(clock=lambda: now[0])
    message = "socket.accept() out of system resource\nsocket: <socket ...>"
    error = OSError(24, "Too many open files")
    shown = [log_filter.filter(r) and r for r in (_record(message, error) for _ in range(2048))]
    passed = [r for r in shown if r]
    assert len(passed) == 1
    assert passed[0].getMessage() == (
        "socket.accept() out of system resource: [Errno 24] Too many open files"
    )
    assert passed[0].exc_info is None
    now[0] += 1.0
    later = _record(message, error)
    assert log_filter.filter(later)
    assert later.getMessage().endswith("(2047 more not shown)")
    other = _record("Task was destroyed but it is pending!")
    assert (
        log_filter.filter(other) and other.getMessage() == "Task was destroyed but it is pending!"
    )


def test_a_request_cancelled_at_the_end_of_the_grace_is_one_line():
    cancelled = _record("Exception in ASGI application\n", asyncio.CancelledError("grace"))
    assert CancelledRequestLog().filter(cancelled)
    assert cancelled.exc_info is None and "\n" not in cancelled.getMessage()
    assert "--shutdown-grace" in cancelled.getMessage()
    other = _record("Exception in ASGI application\n", ValueError("bug"))
    assert CancelledRequestLog().filter(other) and other.exc_info is not None


def test_raw_error_is_a_whole_json_response():
    head, _, body = raw_error(503, "too many connections").partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    assert f"content-length: {len(body)}" in lines and "connection: close" in lines
    assert "retry-after: 1" in lines
    assert json.loads(body) == {"error": "too many connections"}


# ------------------------------------------------------------------------------------------
# The protocol, with real sockets against an in-process uvicorn.


async def _tiny_app(scope, receive, send):
    """Reads the whole body, then answers 200 with its size."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = json.dumps({"size": size}).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Served:
    """An in-process uvicorn with the guard, on a free port, run as a task of the test's loop."""

    def __init__(self, **limits):
        import uvicorn

        from cnnclf.serve.connections import GuardedConfig

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = GuardedConfig(_tiny_app, ServeSettings(**limits), log_config=None, lifespan="off")
        self.server = uvicorn.Server(config)

    async def __aenter__(self):
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc):
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 10)
        self.sock.close()

    async def connect(self):
        return await asyncio.open_connection("127.0.0.1", self.port)


async def _answer(reader, timeout=5.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), timeout)


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else 0


def _run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


GET = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@pytest.mark.slow
def test_idle_slow_head_and_slow_body_are_closed_and_a_normal_request_is_not():
    async def scenario():
        async with _Served(header_timeout=0.3, body_timeout=0.3, keep_alive_timeout=5) as served:
            start = time.monotonic()
            idle_r, _ = await served.connect()
            head_r, head_w = await served.connect()
            head_w.write(b"GET / HTTP/1.1\r\nHost: 12")
            body_r, body_w = await served.connect()
            body_w.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nab")
            ok_r, ok_w = await served.connect()
            ok_w.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello")
            ok = await asyncio.wait_for(ok_r.readuntil(b'"size": 5}'), 5)
            ok_w.write(GET)  # the same connection, kept alive
            idle, head, body, again = await asyncio.gather(
                _answer(idle_r), _answer(head_r), _answer(body_r), _answer(ok_r)
            )
            return ok, again, idle, head, body, time.monotonic() - start

    ok, again, idle, head, body, took = _run(scenario())
    assert _status(ok) == 200 and _status(again) == 200
    assert idle == b""  # an idle connection is closed without a word
    assert _status(head) == 408 and b"--header-timeout 0.3 s" in head
    assert _status(body) == 408 and b"--body-timeout 0.3 s" in body
    assert took < 3


@pytest.mark.slow
def test_a_body_that_keeps_coming_buys_time():
    async def scenario():
        async with _Served(body_timeout=0.3) as served:
            reader, writer = await served.connect()
            writer.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 40960\r\n\r\n")
            for _ in range(10):  # 4 KiB each 0.1 s: 40 KiB/s, far above 1 KiB/s
                writer.write(b"x" * 4096)
                await asyncio.sleep(0.1)
            return await _answer(reader)

    answer = _run(scenario())
    assert _status(answer) == 200 and b'"size": 40960' in answer


@pytest.mark.slow
def test_over_the_cap_the_longest_waiting_connection_makes_room():
    async def scenario():
        async with _Served(max_connections=3, header_timeout=30) as served:
            idle = [await served.connect() for _ in range(3)]
            await asyncio.sleep(0.1)
            reader, writer = await served.connect()
            writer.write(GET)
            fresh = await _answer(reader)
            oldest = await _answer(idle[0][0])
            still_open = [r.at_eof() for r, _ in idle[1:]]
            return fresh, oldest, still_open

    fresh, oldest, still_open = _run(scenario())
    assert _status(fresh) == 200
    assert oldest == b""
    assert still_open == [False, False]


@pytest.mark.slow
def test_over_the_cap_with_every_connection_in_a_request_a_new_one_gets_503():
    async def scenario():
        async with _Served(max_connections=2, body_timeout=30) as served:
            held = []
            for _ in range(2):
                reader, writer = await served.connect()
                writer.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 9\r\n\r\na")
                held.append((reader, writer))
            await asyncio.sleep(0.2)
            reader, _ = await served.connect()
            refused = await _answer(reader)
            for _, writer in held:
                writer.close()
            return refused

    refused = _run(scenario())
    assert _status(refused) == 503 and b"retry-after: 1" in refused
    assert json.loads(refused.partition(b"\r\n\r\n")[2]) == {
        "error": "too many connections; retry in a moment"
    }


@pytest.mark.slow
def test_a_stop_gives_a_stalled_body_the_grace_then_503(caplog):
    async def scenario():
        served = _Served(shutdown_grace=1.0, body_timeout=60)
        await served.__aenter__()
        reader, writer = await served.connect()
        writer.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 9\r\n\r\na")
        await asyncio.sleep(0.2)
        start = time.monotonic()
        await served.__aexit__()
        took = time.monotonic() - start
        return await _answer(reader), took

    with caplog.at_level(logging.INFO):
        answer, took = _run(scenario())
    assert _status(answer) == 503 and b"stopping" in answer
    assert 0.3 < took < 1.5, took  # the grace less its margin, and no cancelled task
    assert "Cancel" not in caplog.text and "Traceback" not in caplog.text
