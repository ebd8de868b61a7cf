"""Which strings are URLs, and the fsspec file system that reads them (imported lazily)."""

from __future__ import annotations

import re
from typing import Any

from cnnclf.storage.errors import EXTRA_HINT, StorageError

# A scheme of two letters or more: "C:\\data" (a Windows drive) is a path, not a URL.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(value: Any) -> bool:
    """True for "s3://bucket/key", "gs://...", and any other scheme but file://."""
    return isinstance(value, str) and bool(_URL.match(value)) and not value.startswith("file://")


def filesystem(url: str, options: dict | None = None) -> tuple[Any, str]:
    """(fsspec file system, path inside it) for `url`; `options` go to the file system.

    Credentials and endpoints come from the provider's own sources first (AWS_* variables,
    including AWS_ENDPOINT_URL, profiles; GOOGLE_APPLICATION_CREDENTIALS): `options` only add.
    """
    try:
        import fsspec
        from fsspec.core import split_protocol

        protocol, _ = split_protocol(url)
        cls = fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise StorageError(
            f"{url}: object storage needs the cloud extra: {EXTRA_HINT}",
        ) from exc
    except ValueError as exc:  # a scheme fsspec does not know
        raise StorageError(f"{url}: unknown storage scheme ({exc})") from exc
    fs = cls(**dict(options or {}))
    return fs, cls._strip_protocol(url)


def join(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative.lstrip('/')}"
