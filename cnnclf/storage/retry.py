"""Bounded retries with exponential backoff, for the transient failures of one request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from cnnclf.storage.errors import explain, is_transient

T = TypeVar("T")

TRIES = 4  # 1 + 3 retries: 0.25 + 0.5 + 1 s of waiting at most
FIRST_WAIT_S = 0.25


def with_retries(request: Callable[[], T], url: str, tries: int = TRIES) -> T:
    """`request()`, again after a pause while it fails transiently; else a `StorageError`.

    Only connection-level failures are retried: a missing object or a refused credential
    will not change in a second, and saying so at once is kinder than saying it later.
    """
    for attempt in range(1, tries + 1):
        try:
            return request()
        except Exception as exc:
            if attempt < tries and is_transient(exc):
                time.sleep(FIRST_WAIT_S * 2 ** (attempt - 1))
                continue
            raise explain(exc, url, attempt) from exc
    raise AssertionError("unreachable")
