"""At most `--max-concurrent-requests` requests inside the app at once; the rest get a 503 at
once, and the health probes always pass.

Why: every request in the app holds memory (its body, decoded pixels) and a place in the
model's queue; past a point more of them only make each slower. A prompt 503 with
`Retry-After` tells a client (or a load balancer) to come back, where a queue would make it
wait for a timeout. The probes are exempt, so that an orchestrator never restarts a server for
being busy. Unlike uvicorn's `limit_concurrency`, idle connections do not count (they are
capped and timed out in connections.py) and the 503 is JSON like every other error.

Example:
    app = RequestLimit(app, limit=64, exempt=("/healthz", "/readyz"))
"""

from __future__ import annotations

import json


class RequestLimit:
    """ASGI middleware: `limit` HTTP requests in `app` at once, paths in `exempt` not counted."""

    def __init__(self, app, limit: int, exempt: tuple[str, ...] = ()):
        self.app = app
        self.limit = limit
        self.exempt = exempt
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.exempt:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limit:
            return await _busy(send, self.limit)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def _busy(send, limit: int) -> None:
    body = json.dumps(
        {
            "error": f"busy: {limit} requests already in progress "
            "(--max-concurrent-requests); retry in a moment"
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
