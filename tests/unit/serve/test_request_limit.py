"""serve/admission.py: past `--max-concurrent-requests` a request gets a JSON 503 at once, the
probes always pass, and a finished (or failed) request frees its place."""

import asyncio
import json

import pytest

from cnnclf.serve.admission import RequestLimit


def _scope(path: str) -> dict:
    return {"type": "http", "method": "GET", "path": path, "headers": []}


async def _call(app, path: str) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request to `app`."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(_scope(path), receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def test_past_the_limit_a_request_is_turned_away_and_probes_are_not():
    async def scenario():
        release = asyncio.Event()

        async def slow_app(scope, receive, send):
            if scope["path"] == "/fail":
                raise ValueError("the app failed")
            if scope["path"] == "/slow":
                await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        limit = RequestLimit(slow_app, 2, exempt=("/healthz",))
        held = [asyncio.create_task(_call(limit, "/slow")) for _ in range(2)]
        await asyncio.sleep(0.01)
        busy = await _call(limit, "/predict")
        probe = await _call(limit, "/healthz")
        release.set()
        finished = await asyncio.gather(*held)
        with pytest.raises(ValueError):
            await _call(limit, "/fail")  # and its place is freed all the same
        after = await _call(limit, "/predict")
        return busy, probe, finished, after, limit.in_flight

    busy, probe, finished, after, in_flight = asyncio.run(scenario())
    status, headers, body = busy
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert json.loads(body) == {
        "error": "busy: 2 requests already in progress (--max-concurrent-requests); "
        "retry in a moment"
    }
    assert int(headers[b"content-length"]) == len(body)
    assert probe[0] == 200
    assert [f[0] for f in finished] == [200, 200]
    assert after[0] == 200 and in_flight == 0


def test_lifespan_passes_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(RequestLimit(app, 1)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]
