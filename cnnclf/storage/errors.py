"""What a storage failure means to the user, in one line, and which failures are worth a retry.

fsspec back-ends raise their own exception types (botocore's, aiohttp's, google-auth's); they
are recognised by name and message so that this module imports none of them.
"""

from __future__ import annotations

from cnnclf.errors import CnnclfError

EXTRA_HINT = "pip install 'cnnclf[cloud]'"

# Exception class names that mean "try again": the connection, not the request, failed.
_TRANSIENT_NAMES = (
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ClientPayloadError",
    "ClientOSError",
    "IncompleteReadError",
    "ResponseStreamingError",
    "TransportError",
)
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError")


class StorageError(CnnclfError):
    """Object storage refused or could not be reached; the message names the URL and the fix."""

    exit_code = 1


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and its causes: s3fs wraps botocore's error, which may wrap aiohttp's."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_transient(exc: BaseException) -> bool:
    """A dropped or refused connection, a timeout, a 5xx: the same request may well succeed."""
    for link in _chain(exc):
        name = type(link).__name__
        if name in _TRANSIENT_NAMES or isinstance(link, (ConnectionError, TimeoutError)):
            return True
        text = str(link)
        if any(code in text for code in ("SlowDown", "503", "500 Internal", "InternalError")):
            return True
    return False


def explain(exc: BaseException, url: str, tries: int = 1) -> StorageError:
    """The one line for a failed request on `url` (after `tries` attempts)."""
    names = {type(link).__name__ for link in _chain(exc)}
    text = " ".join(str(link) for link in _chain(exc))
    if names & set(_NO_CREDENTIALS) or "Unable to locate credentials" in text:
        return StorageError(
            f"{url}: no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE) for s3://, GOOGLE_APPLICATION_CREDENTIALS for gs://, or "
            "data.storage_options"
        )
    if no_such_bucket(exc):
        return StorageError(f"{url}: no such bucket: check the bucket's name (and the endpoint)")
    if isinstance(exc, PermissionError) or any(
        word in text for word in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch")
    ):
        return StorageError(
            f"{url}: access denied: the credentials in use may not read (or write) it"
        )
    if is_transient(exc):
        return StorageError(
            f"{url}: the storage service could not be reached ({tries} tries): "
            f"{_first_line(exc)}; check the network and AWS_ENDPOINT_URL, then run again"
        )
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"{url}: no such object or folder")
    return StorageError(f"{url}: {type(exc).__name__}: {_first_line(exc)}")


def no_such_bucket(exc: BaseException) -> bool:
    text = " ".join(f"{type(link).__name__} {link}" for link in _chain(exc))
    return "NoSuchBucket" in text or "bucket does not exist" in text.lower()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
