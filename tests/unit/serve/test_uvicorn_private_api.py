"""The uvicorn and asyncio internals serve/connections.py rests on, checked so that an upgrade
says so loudly instead of leaving idle connections open again.

- `GuardedH11Protocol` subclasses uvicorn's `H11Protocol`: it is built with uvicorn's keyword
  arguments, reads `conn` (h11's view of the client), `cycle`, `flow.read_paused`,
  `transport`, `connections` and `loop`, and extends `connection_made`, `data_received`,
  `on_response_complete`, `connection_lost` and `shutdown`; uvicorn must still call
  `shutdown()` on each connection when it stops, and let `Config(http=<class>)` choose it.
- `AcceptErrorLog` recognises asyncio's `socket.accept() out of system resource` message.
"""

import asyncio
import inspect

import h11
import pytest
import uvicorn
from uvicorn.protocols.http import flow_control, h11_impl
from uvicorn.server import Server, ServerState

from cnnclf.serve.connections import AcceptErrorLog, GuardedConfig, GuardedH11Protocol
from cnnclf.serve.settings import ServeSettings

CHANGED = (
    "{what} changed in this uvicorn ({version}): update cnnclf/serve/connections.py "
    "before upgrading"
)


def changed(what: str) -> str:
    return CHANGED.format(what=what, version=uvicorn.__version__)


async def _app(scope, receive, send):
    pass


class _Transport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.closing, self.written = False, b""

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def is_closing(self):
        return self.closing

    def close(self):
        self.closing = True

    def write(self, data):
        self.written += bytes(data)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def test_config_takes_the_protocol_class():
    config = GuardedConfig(_app, ServeSettings(), log_config=None)
    config.load()
    assert config.http_protocol_class is GuardedH11Protocol, changed("Config(http=<class>)")
    assert config.timeout_keep_alive == ServeSettings().keep_alive_timeout, changed("Config")
    assert config.timeout_graceful_shutdown == ServeSettings().shutdown_grace, changed("Config")


def test_the_server_builds_protocols_with_these_keywords_and_shuts_each_down():
    startup = inspect.getsource(Server.startup)
    for keyword in ("config=config", "server_state=self.server_state", "app_state="):
        assert keyword in startup, changed(f"Server.startup ({keyword})")
    assert "connection.shutdown()" in inspect.getsource(Server.shutdown), changed("Server.shutdown")
    assert "timeout_graceful_shutdown" in inspect.getsource(Server.shutdown), changed(
        "Server.shutdown's grace"
    )


def test_the_protocol_still_has_what_the_guard_reads_and_extends():
    for name in ("connection_made", "data_received", "on_response_complete", "shutdown"):
        assert name in vars(h11_impl.H11Protocol), changed(f"H11Protocol.{name}")
    assert "connection_lost" in vars(h11_impl.H11Protocol), changed("H11Protocol.connection_lost")
    assert "read_paused" in inspect.getsource(flow_control.FlowControl), changed("FlowControl")
    cycle = inspect.getsource(h11_impl.RequestResponseCycle.__init__)
    for name in ("self.response_started", "self.disconnected"):
        assert name in cycle, changed(f"RequestResponseCycle ({name})")

    async def build_and_feed():
        config = GuardedConfig(_app, ServeSettings(), log_config=None)
        state = ServerState()
        protocol = GuardedH11Protocol(config=config, server_state=state, app_state={})
        protocol.connection_made(_Transport())
        seen = [protocol in state.connections, protocol.cycle, protocol.conn.their_state]
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
        seen.append(protocol.conn.their_state)
        protocol.connection_lost(None)
        await asyncio.gather(*state.tasks)
        return protocol, seen

    protocol, (registered, cycle, before, after) = asyncio.run(build_and_feed())
    assert isinstance(protocol.conn, h11.Connection), changed("H11Protocol.conn")
    assert registered, changed("ServerState.connections")
    assert cycle is None and before is h11.IDLE, changed("H11Protocol.cycle or .conn")
    assert after is h11.SEND_BODY, changed("H11Protocol.data_received")
    assert protocol.flow.read_paused is False, changed("H11Protocol.flow")
    assert isinstance(protocol.loop, asyncio.AbstractEventLoop), changed("H11Protocol.loop")


def test_asyncio_still_logs_accept_errors_with_this_message():
    pytest.importorskip("asyncio.selector_events")
    from asyncio import selector_events

    source = inspect.getsource(selector_events.BaseSelectorEventLoop._accept_connection)
    assert f"'{AcceptErrorLog.MESSAGE}'" in source, (
        "asyncio's accept-error message changed: update AcceptErrorLog in "
        "cnnclf/serve/connections.py"
    )
