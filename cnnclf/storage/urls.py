"""Which strings are URLs, and the fsspec file system that reads them (imported lazily)."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from pathlib import Path
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
    _quiet_client_loggers()
    if protocol in ("gs", "gcs") and not _google_credentials(options or {}):
        raise StorageError(
            f"{url}: no Google Cloud credentials found: set GOOGLE_APPLICATION_CREDENTIALS to "
            "a service-account key file, run `gcloud auth application-default login`, or set "
            "data.storage_options.token (anon for a public bucket)"
        )
    fs = cls(**dict(options or {}))
    return fs, cls._strip_protocol(url)


def _quiet_client_loggers() -> None:
    """The storage clients log their retries and tracebacks themselves; cnnclf says what went
    wrong in one line (`errors.py`), so theirs are kept for --verbose (cnnclf at DEBUG)."""
    if logging.getLogger("cnnclf").isEnabledFor(logging.DEBUG):
        return
    for name in ("gcsfs", "google", "google.auth", "aiohttp", "s3fs", "aiobotocore", "botocore"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _google_credentials(options: dict) -> bool:
    """Whether gcsfs can find credentials: a token option, GOOGLE_APPLICATION_CREDENTIALS,
    gcloud's application-default file, or a metadata server (a Google Cloud VM, GKE, Vertex
    AI), looked up by name with a 2 s bound. Without any, gcsfs retries for about 50 s."""
    if "token" in options or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return True
    gcloud = Path(os.environ.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud")
    if (gcloud / "application_default_credentials.json").is_file():
        return True
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal").split(":")[0]
    found: list[bool] = []

    def resolve() -> None:
        try:
            found.append(bool(socket.getaddrinfo(host, 80)))
        except OSError:
            found.append(False)

    lookup = threading.Thread(target=resolve, daemon=True)
    lookup.start()
    lookup.join(2.0)
    return not found or found[0]  # an unanswered lookup is not a refusal


def join(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative.lstrip('/')}"
