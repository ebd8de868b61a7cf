"""Reading request bodies with a size limit: multipart uploads and JSON, all in memory.

A body is read into one buffer, allocated once at its declared Content-Length (the chunks
are copied in as they arrive and dropped), and refused as soon as it passes the limit, so a
client that sends (or claims) gigabytes costs the server at most the limit. The uploads are
views into that buffer, not copies. Parsing runs on a worker thread, not on the event loop,
and stops at the first sign of a hostile body: a boundary RFC 2046 does not allow, more
parts than a request needs, oversized part headers. Uploads stay in memory: nothing a client
sends, file names included, ever reaches the file system. Starlette's own form parser would
spool files over 1 MB to temporary files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import cast

import anyio.to_thread
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

MAX_FORM_FIELDS = 64  # plain (non-file) parts in one multipart body
# RFC 2046: 1 to 70 characters from this set, not ending in a space.
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a message for {"error": ...}."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers  # e.g. Retry-After on a 503


@dataclass(frozen=True)
class Upload:
    """One file part of a multipart request."""

    field: str
    filename: str  # as the client sent it; only ever echoed back, never used as a path
    content_type: str
    # A memoryview into the request's body buffer at run time (no copy; see `_joined`).
    data: bytes


def too_large(limit: int) -> RequestError:
    return RequestError(
        413, f"request body over the server's limit of {limit / 2**20:g} MB (--max-upload-mb)"
    )


def declared_length(request: Request, limit: int) -> int | None:
    """The body's Content-Length, None when not declared (chunked); 413 over `limit`."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    try:
        length = int(declared)
    except ValueError:
        raise RequestError(400, f"Content-Length {_shown(declared)} is not a number") from None
    if length > limit:
        raise too_large(limit)
    return max(length, 0)


def body_cost(request: Request, limit: int) -> int:
    """Bytes a request's body will hold in memory: declared, else up to `limit`."""
    declared = declared_length(request, limit)
    return limit if declared is None else declared


async def read_body(request: Request, limit: int) -> bytearray:
    """The whole body in one buffer, refused with 413 as soon as it passes `limit` bytes."""
    declared = declared_length(request, limit)
    if declared is None:  # chunked: grown as it comes (bytearray growth is amortised)
        grown = bytearray()
        async for chunk in request.stream():
            if len(grown) + len(chunk) > limit:
                raise too_large(limit)
            grown += chunk
        return grown
    buffer, size = bytearray(declared), 0
    with memoryview(buffer) as view:
        async for chunk in request.stream():
            if size + len(chunk) > declared:  # the server frames bodies by length: defensive
                raise RequestError(400, "request body longer than its Content-Length")
            view[size : size + len(chunk)] = chunk
            size += len(chunk)
    if size != declared:
        raise RequestError(400, f"request body of {size} bytes, not its Content-Length")
    return buffer


async def read_json(request: Request, limit: int):
    """The parsed JSON body; 415 for another content type, 400 for malformed JSON, 413 for
    more values than a request may hold (parsed on a worker thread)."""
    kind, _ = parse_options_header(request.headers.get("content-type"))
    if kind != b"application/json":
        raise RequestError(
            415,
            f"expected Content-Type application/json, got "
            f"{_shown(request.headers.get('content-type'))}",
        )
    body = await read_body(request, limit)
    return await anyio.to_thread.run_sync(parse_json, body)


def parse_json(body: bytearray):
    """`json.loads` after `check_json_shape`; the body's buffer is emptied once parsed."""
    from cnnclf.serve.json_shape import check_json_shape

    check_json_shape(body)
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise RequestError(400, "malformed JSON body: not UTF-8 text") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON body: nested too deeply") from None
    except ValueError as exc:
        raise RequestError(400, f"malformed JSON body: {_shown(str(exc))}") from None
    finally:
        del body[:]  # the parsed copy is all that is needed now: free the raw one


def multipart_boundary(request: Request) -> bytes:
    """The boundary of a multipart/form-data request; 415 for another type, 400 for a
    missing or invalid one."""
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data":
        raise RequestError(
            415,
            f"expected Content-Type multipart/form-data (a file upload, "
            f"e.g. curl -F file=@image.jpg), got "
            f"{_shown(request.headers.get('content-type'))}",
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestError(400, "multipart/form-data without a boundary")
    if not _BOUNDARY.fullmatch(boundary):
        raise RequestError(
            400,
            f"multipart boundary of {len(boundary)} characters is invalid: RFC 2046 allows "
            "1 to 70 letters, digits and '()+_,-./:=? (not ending in a space)",
        )
    return boundary


async def read_uploads(request: Request, limit: int, max_files: int = 256) -> list[Upload]:
    """The file parts of a multipart/form-data body (form fields without a file are ignored).

    Raises:
        RequestError: 415 for another content type, 400 for a malformed body or one without
            a file, 413 past `limit` bytes, `max_files` files or MAX_FORM_FIELDS fields.
    """
    boundary = multipart_boundary(request)
    body = await read_body(request, limit)
    return await anyio.to_thread.run_sync(parse_multipart, body, boundary, max_files)


def parse_multipart(body: bytearray, boundary: bytes, max_files: int) -> list[Upload]:
    """The file parts of a whole multipart body, as views into `body` (see `read_uploads`)."""
    uploads: list[Upload] = []
    try:
        parser = _parser(body, boundary, uploads, max_files)
        parser.write(cast(bytes, body))  # one write: parts lie in `body`, unsplit
        parser.finalize()
    except RequestError:
        raise
    except Exception as exc:  # python-multipart's MultipartParseError and friends
        raise RequestError(400, f"malformed multipart body ({_shown(str(exc))})") from None
    if not uploads:
        raise RequestError(
            400,
            "no file in the request: send the image as a multipart file "
            "field, e.g. curl -F file=@image.jpg",
        )
    return uploads


def _parser(
    body: bytearray, boundary: bytes, uploads: list[Upload], max_files: int
) -> MultipartParser:
    """A multipart parser over `body` that appends each file part to `uploads` as it ends."""
    part: dict = {}
    header = {"name": b"", "value": b""}
    fields = [0]

    def on_part_begin():
        part.clear()
        part.update(headers={}, segments=[])

    def on_header_field(data, start, end):
        header["name"] += data[start:end]

    def on_header_value(data, start, end):
        header["value"] += data[start:end]

    def on_header_end():
        part["headers"][bytes(header["name"]).lower()] = bytes(header["value"])
        header["name"], header["value"] = b"", b""

    def on_part_data(data, start, end):
        part["segments"].append((data, start, end))

    def on_part_end():
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition"))
        if b"filename" not in disposition:
            fields[0] += 1
            if fields[0] > MAX_FORM_FIELDS:
                raise RequestError(413, f"more than {MAX_FORM_FIELDS} form fields in one request")
            return
        if len(uploads) >= max_files:
            raise RequestError(413, f"more than {max_files} file(s) in one request")
        uploads.append(
            Upload(
                field=disposition.get(b"name", b"").decode("utf-8", "replace"),
                filename=disposition[b"filename"].decode("utf-8", "replace"),
                content_type=part["headers"].get(b"content-type", b"").decode("latin-1"),
                data=_joined(body, part["segments"]),
            )
        )

    return MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )


def _joined(body: bytearray, segments: list) -> bytes:
    """A part's data: a view into `body` when it lies there in one piece (parsed in one
    write, it does), else a copy of its pieces.

    The view is typed as bytes: every reader of an upload (io.BytesIO, Pillow, base64's
    callers) takes a memoryview where bytes go, and the body would otherwise be held twice.
    """
    if len(segments) == 1 and segments[0][0] is body:
        _, start, end = segments[0]
        return cast(bytes, memoryview(body)[start:end])
    return b"".join(bytes(data[start:end]) for data, start, end in segments)


def _shown(value: str | None) -> str:
    if not value:
        return "none"
    return repr(value if len(value) <= 80 else value[:80] + "...")
