"""The server's connections, guarded: a cap on how many are open, and deadlines for a request's
head and body, so that idle and slow clients cannot hold the server or starve a health check.

Why: uvicorn's h11 server waits for a request head forever (h11 has no header timeout) and for
a body as long as it trickles, and it accepts connections until the process runs out of file
descriptors; from then on every connection, health checks included, waits, and asyncio logs
`socket.accept() out of system resource` thousands of times a second.

Each connection is in one phase at a time, and each phase has its rule:

- head (from connecting, or from the end of the previous response): the request line and
  headers must be complete within `header_timeout` seconds, else the connection is closed
  (after a 408 when part of a head came). uvicorn's own keep-alive timer still closes a
  connection that sends nothing after a response (`keep_alive_timeout`).
- body: the body must arrive within `body_timeout` seconds plus one second per KiB received
  (an average of 1 KiB/s, Apache mod_reqtimeout's MinRate idea), else 408 and closed. A slow
  but real upload keeps buying time; one byte a second does not. While the server itself has
  paused reading (its buffer is full, the app is busy), the clock starts again.
- app: the request has arrived and the app is answering it: no deadline here.
- stopping (SIGTERM, Ctrl-C): a body still arriving gets until `shutdown_grace` less half a
  second, then 503 and closed, so a stop ends within the grace without cancelling a task.

Over `max_connections` open connections, a new one closes the one that has waited longest for
a request head (idle, slow or keep-alive); only when every connection is inside a request does
the new one get a 503 and closed. Descriptors never run out, and a new client, a health check
above all, gets in.

uvicorn private API this rests on (pinned by tests/unit/serve/test_uvicorn_private_api.py):
`H11Protocol`'s constructor and its `conn`, `cycle`, `flow`, `transport`, `connections`,
`loop`, `connection_made`, `data_received`, `on_response_complete` and `shutdown`;
`RequestResponseCycle.response_started` and `.disconnected`; `Config(http=<class>)`.

Example:
    config = GuardedConfig(app, settings, backlog=2048)  # uvicorn.Config(http=GuardedH11Protocol)
    uvicorn.Server(config).run(sockets=[sock])
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import time

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from cnnclf.serve.settings import ServeSettings

BODY_MIN_RATE = 1024  # bytes a second a body must average once its --body-timeout is spent
STOP_MARGIN_S = 0.5  # a stalled body is closed this long before --shutdown-grace runs out
OTHER_FILES = 64  # descriptors the process needs besides connections (it uses ~10)
BACKLOG = 2048  # uvicorn's default listen queue; also how many asyncio accepts in one go
MIN_BACKLOG = 16


class Phase(enum.Enum):
    HEAD = "head"  # waiting for a request line and headers
    BODY = "body"  # the request's body is arriving
    APP = "app"  # the request has arrived; the app answers it


class GuardedConfig(uvicorn.Config):
    """`uvicorn.Config` serving HTTP/1.1 with `GuardedH11Protocol`, under `settings`' limits.

    A subclass rather than a closure, so that `--workers` processes get it pickled whole.
    """

    def __init__(self, app, settings: ServeSettings, **kwargs):
        self.serve_settings = settings
        super().__init__(
            app,
            http=GuardedH11Protocol,
            loop="asyncio",  # the accept-error filter and the tests know asyncio's loop
            timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
            timeout_graceful_shutdown=settings.shutdown_grace,  # type: ignore[arg-type]
            **kwargs,
        )


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the phases, deadlines and cap of this module's docstring."""

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ServeSettings = config.serve_settings
        self.phase = Phase.HEAD
        self.phase_started = self.loop.time()
        self.phase_bytes = 0
        self.stop_at: float | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        crowded = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        if crowded and not self._make_room():
            self._answer_and_close(503, "too many connections; retry in a moment")
            return
        self._enter(Phase.HEAD)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._observe():
            self.phase_bytes += len(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._observe()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        super().shutdown()
        self.stop_at = self.loop.time() + max(0.0, self.limits.shutdown_grace - STOP_MARGIN_S)
        if self.phase is Phase.BODY:
            self._cancel_timer()
            self._arm()

    def _observe(self) -> bool:
        """Follows h11's view of the client into a phase; True when the phase went on as it was."""
        state = self.conn.their_state
        phase = (
            Phase.HEAD if state is h11.IDLE else Phase.BODY if state is h11.SEND_BODY else Phase.APP
        )
        if phase is self.phase:
            return True
        self._enter(phase)
        return False

    def _enter(self, phase: Phase) -> None:
        self.phase, self.phase_started, self.phase_bytes = phase, self.loop.time(), 0
        self._cancel_timer()
        self._arm()

    def _deadline(self) -> float | None:
        if self.phase is Phase.HEAD:
            return self.phase_started + self.limits.header_timeout
        if self.phase is Phase.BODY:
            slow = self.phase_started + self.limits.body_timeout + self.phase_bytes / BODY_MIN_RATE
            return slow if self.stop_at is None else min(slow, self.stop_at)
        return None

    def _arm(self) -> None:
        deadline = self._deadline()
        if deadline is not None and self.timer is None and not self.transport.is_closing():
            self.timer = self.loop.call_at(deadline, self._on_deadline)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_deadline(self) -> None:
        # Data arriving only moves the deadline later, so the timer is re-armed here rather
        # than on each read.
        self.timer = None
        if self.transport.is_closing() or not self._observe():
            return
        now = self.loop.time()
        if self.phase is Phase.BODY and self.flow.read_paused and self.stop_at is None:
            self.phase_started, self.phase_bytes = now, 0  # our pause, not the client's
        deadline = self._deadline()
        if deadline is not None and now < deadline:
            self._arm()
        elif self.phase is Phase.HEAD:
            self._close_waiting()
        elif self.stop_at is not None and now >= self.stop_at:
            self._answer_and_close(503, "the server is stopping; retry in a moment")
        else:
            self._answer_and_close(
                408,
                f"the request body came too slowly (--body-timeout {self.limits.body_timeout:g} s)",
            )

    def _close_waiting(self) -> None:
        """Closes a connection waiting for a head: silently when it sent nothing (idle)."""
        if self.phase_bytes:
            self._answer_and_close(
                408,
                f"the request head took over --header-timeout {self.limits.header_timeout:g} s",
            )
        else:
            self._answer_and_close(None, "")

    def _make_room(self) -> bool:
        """Closes the connection waiting longest for a request head; False when there is none.

        Connections already closing still count in uvicorn's set until their loss is
        reported, so they are counted out first: a burst of accepts evicts one each.
        """
        others = [c for c in self.connections if c is not self]
        open_ones = [c for c in others if not c.transport.is_closing()]
        if len(open_ones) < self.limits.max_connections:
            return True
        waiting = [
            c for c in open_ones if isinstance(c, GuardedH11Protocol) and c.phase is Phase.HEAD
        ]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.phase_started)
        oldest._close_waiting()
        return True

    def _answer_and_close(self, status: int | None, message: str) -> None:
        """Ends the connection, first with a one-line JSON error when no response has begun."""
        self._cancel_timer()
        if status is not None and not (self.cycle and self.cycle.response_started):
            if self.cycle is not None:
                self.cycle.disconnected = True  # the app's reply, if any, goes nowhere
            self.transport.write(raw_error(status, message))
        self.transport.close()


def raw_error(status: int, message: str) -> bytes:
    """A complete `Connection: close` HTTP/1.1 response with `{"error": message}`."""
    from http import HTTPStatus

    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        + ("retry-after: 1\r\n" if status == 503 else "")
        + "connection: close\r\n\r\n"
    )
    return head.encode() + body


# ------------------------------------------------------------------------------------------
# Open files: enough for the cap, or a cap that fits.


@dataclasses.dataclass(frozen=True)
class OpenFilesPlan:
    """The open-file limit to set, and the connection cap and listen backlog that fit in it."""

    soft_limit: int
    max_connections: int
    backlog: int
    warning: str | None = None


def plan_open_files(max_connections: int, soft: int, hard: int) -> OpenFilesPlan:
    """Fits `max_connections` open connections, the backlog asyncio accepts in one go, as many
    connections being closed to make room for them (a socket is closed a loop tick after its
    transport), and the process's other files under the open-file limit, raising the soft
    limit up to `hard`.

    A cap over what the limit allows would let accepts fail with EMFILE, which is what took
    health checks down; a lower cap with a one-line warning does not.

    Example: `plan_open_files(1000, 1024, 1024)` → a cap of 576 and a backlog of 192.
    """
    need = max_connections + 2 * BACKLOG + OTHER_FILES
    unlimited = hard < 0  # resource.RLIM_INFINITY
    target = need if unlimited else min(need, hard)
    soft_limit = soft if soft < 0 or soft >= need else max(soft, target)
    if soft_limit < 0 or soft_limit >= need:
        return OpenFilesPlan(soft_limit, max_connections, BACKLOG)
    room = soft_limit - OTHER_FILES
    backlog = max(MIN_BACKLOG, min(BACKLOG, room // 5))
    fitted = max(1, min(max_connections, room - 2 * backlog))
    warning = None
    if fitted < max_connections:
        warning = (
            f"warning: --max-connections {max_connections}: the open-file limit "
            f"({soft_limit}) allows {fitted}; serving at most {fitted} (raise it with ulimit -n)"
        )
    return OpenFilesPlan(soft_limit, fitted, backlog, warning)


def fit_open_files(max_connections: int) -> OpenFilesPlan:
    """`plan_open_files` for this process, applied (the soft limit raised where it must be)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to fit
        return OpenFilesPlan(-1, max_connections, BACKLOG)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    plan = plan_open_files(max_connections, soft, hard)
    if plan.soft_limit != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (plan.soft_limit, hard))
        except (ValueError, OSError):
            return plan_open_files(max_connections, soft, soft)
    return plan


# ------------------------------------------------------------------------------------------
# Log lines that must stay lines.


class AcceptErrorLog(logging.Filter):
    """asyncio's `socket.accept() out of system resource`: one line a second at most.

    asyncio logs it, with a traceback, for each of up to `backlog` accepts in one loop tick,
    again on every retry: 8 MB to 240 MB of log in 30 s once descriptors ran out.
    """

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, every_s: float = 1.0, clock=time.monotonic):
        super().__init__()
        self.every_s, self.clock = every_s, clock
        self.last = float("-inf")
        self.hidden = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.MESSAGE):
            return True
        now = self.clock()
        if now - self.last < self.every_s:
            self.hidden += 1
            return False
        reason = record.exc_info[1] if record.exc_info else None
        record.msg = f"{self.MESSAGE}: {reason or 'no detail'}" + (
            f" ({self.hidden} more not shown)" if self.hidden else ""
        )
        record.args, record.exc_info, record.exc_text = (), None, None
        self.last, self.hidden = now, 0
        return True


class CancelledRequestLog(logging.Filter):
    """uvicorn's `Exception in ASGI application` for a request cancelled at the end of the
    shutdown grace: one line instead of a CancelledError traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            record.msg = "stopped a request still running when --shutdown-grace ran out"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def install_log_filters() -> None:
    """Adds the two filters above to the loggers asyncio and uvicorn write these lines to."""
    asyncio_log, uvicorn_log = logging.getLogger("asyncio"), logging.getLogger("uvicorn.error")
    if not any(isinstance(f, AcceptErrorLog) for f in asyncio_log.filters):
        asyncio_log.addFilter(AcceptErrorLog())
    if not any(isinstance(f, CancelledRequestLog) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(CancelledRequestLog())
