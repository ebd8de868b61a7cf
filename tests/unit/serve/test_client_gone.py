"""A client that goes away mid-body is not an internal error: no 500, no error line."""

import asyncio
import logging

from fastapi import FastAPI, Request

from cnnclf.serve.errors import add_error_handlers
from cnnclf.serve.uploads import read_body


def test_a_client_gone_mid_body_is_answered_quietly(caplog):
    app = FastAPI()
    add_error_handlers(app)

    @app.post("/upload")
    async def upload(request: Request):
        return {"size": len(await read_body(request, 1 << 20))}

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/upload",
        "raw_path": b"/upload",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    messages = [
        {"type": "http.request", "body": b"x" * 10, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    with caplog.at_level(logging.ERROR, logger="cnnclf"):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
