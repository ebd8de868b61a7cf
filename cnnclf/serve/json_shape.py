"""A cheap look at a JSON body's shape before `json.loads` builds it.

Why: `json.loads` holds the interpreter for as long as it runs, on any thread, so a 20 MB
body of a million tiny values froze every client for a second, and `[` x 5,000 ended in a
RecursionError. A valid TensorFlow Serving body is a few hundred instances of base64 text,
so it has few brackets and commas, and base64 has none inside its strings. Counting them
takes `bytes.count` (memchr speed, ~10 ms for 20 MB), and the nesting depth is read from the
brackets alone; the Python work is bounded by the limits, not by the body. A bracket inside
a string is counted too: a valid body has none, and one that slips by is still refused by
`json.loads` (a RecursionError is caught as a 400 where the body is parsed).
"""

from __future__ import annotations

from cnnclf.serve.settings import MAX_INSTANCES
from cnnclf.serve.uploads import RequestError

MAX_DEPTH = 32
# {"instances": [{"image_bytes": {"b64": "..."}}, ...]}: 2 objects and 1 comma an instance.
MAX_CONTAINERS = 2 * MAX_INSTANCES + 16
MAX_COMMAS = 4 * MAX_INSTANCES + 16
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def check_json_shape(body, max_depth: int = MAX_DEPTH) -> None:
    """Refuses a body nested deeper than `max_depth` (400) or with more arrays, objects or
    values than `MAX_INSTANCES` instances need (413).

    Args:
        body: the raw bytes (or bytearray) of a JSON document, not yet parsed.

    Example: `check_json_shape(b"[" * 5000)` raises RequestError(400, "... nested ...").
    """
    containers = body.count(b"[") + body.count(b"{")
    if containers > max_depth:
        depth = 0
        for bracket in _brackets(body)[: 2 * MAX_CONTAINERS]:  # bounded Python work
            depth += 1 if bracket in b"[{" else -1
            if depth > max_depth:
                raise RequestError(
                    400, f"malformed JSON body: nested more than {max_depth} levels deep"
                )
    if containers > MAX_CONTAINERS or body.count(b",") > MAX_COMMAS:
        raise RequestError(
            413,
            f"JSON body with more values than {MAX_INSTANCES} instances of "
            '{"b64": ...} (the most one request may hold) can have',
        )


def _brackets(body) -> bytes:
    """The bytes of `body` that are brackets or braces, in order (a C-speed filter)."""
    return bytes(body.translate(None, _NOT_BRACKETS))
