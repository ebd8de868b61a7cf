"""What `cnnclf serve` was asked for, and the limits every request is held to."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_WAIT_MS = 5.0
MAX_INSTANCES = 256  # images in one request (multipart files or TF-Serving instances)
DEFAULT_TOP_K = 5  # classes listed in top_k for 3+ class models, unless ?top_k= says


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

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)
