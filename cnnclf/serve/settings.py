"""What `cnnclf serve` was asked for, and the limits every request is held to."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_WAIT_MS = 5.0
MAX_INSTANCES = 256  # images in one request (multipart files or TF-Serving instances)
BODIES_PER_BUDGET = 4  # default --max-bodies-mb: this many bodies of --max-upload-mb
DEFAULT_TOP_K = 5  # classes listed in top_k for 3+ class models, unless ?top_k= says
DEFAULT_NOTICE = "Research use only — not a diagnostic device."  # the page's line; --notice
# Connections (serve/connections.py): the defaults of the options of the same names.
DEFAULT_MAX_CONNECTIONS = 1000  # open at once, per worker process
DEFAULT_MAX_CONCURRENT_REQUESTS = 64  # in the app at once; /healthz and /readyz always pass
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for a request's line and headers
DEFAULT_BODY_TIMEOUT = 10.0  # seconds for its body, plus one per KiB received
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0  # seconds an idle connection stays open after a response
DEFAULT_SHUTDOWN_GRACE = 5.0  # seconds SIGTERM waits for requests in flight (docker: 10)


@dataclass(frozen=True)
class ServeSettings:
    """What `cnnclf serve` was asked for: the CLI options of the same names, and the
    decoding threads (one per core)."""

    name: str = "model"
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    decode_threads: int = field(default_factory=lambda: os.cpu_count() or 2)
    notice: str = DEFAULT_NOTICE  # shown on the page and carried in the card; "" shows none
    host: str = "127.0.0.1"  # the --host bound: a Host header may name it (serve/hosts.py)
    allowed_hosts: tuple[str, ...] = ()  # --allowed-host: more names the Host may give
    docs: bool = False  # --docs: with a token, /docs and /redoc too and /openapi.json public
    max_bodies_mb: float | None = None  # request bodies in memory at once; None: 4 x upload
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    review_dir: str | None = None  # --review: a review folder served at /review/ (review.py)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_bodies_bytes(self) -> int:
        if self.max_bodies_mb is None:
            return BODIES_PER_BUDGET * self.max_upload_bytes
        return int(self.max_bodies_mb * 2**20)
