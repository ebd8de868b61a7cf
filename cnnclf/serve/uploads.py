"""Reading request bodies with a size limit: multipart uploads and JSON, all in memory.

Bodies are read chunk by chunk and refused as soon as they pass the limit, so a client that
sends (or claims) gigabytes costs the server at most the limit. Uploads stay in memory (they
are bounded by the limit): nothing a client sends, file names included, ever reaches the file
system. Starlette's own form parser would spool files over 1 MB to temporary files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a message for {"error": ...}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Upload:
    """One file part of a multipart request."""

    field: str
    filename: str  # as the client sent it; only ever echoed back, never used as a path
    content_type: str
    data: bytes


def too_large(limit: int) -> RequestError:
    return RequestError(
        413, f"request body over the server's limit of {limit / 2**20:g} MB (--max-upload-mb)"
    )


def check_declared_length(request: Request, limit: int) -> None:
    """Refuses a body whose Content-Length already says it is over `limit`, before reading."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(400, f"Content-Length {declared!r} is not a number") from None
        if length > limit:
            raise too_large(limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `limit` bytes."""
    check_declared_length(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int):
    """The parsed JSON body; 415 for another content type, 400 for malformed JSON."""
    kind, _ = parse_options_header(request.headers.get("content-type"))
    if kind != b"application/json":
        raise RequestError(
            415,
            f"expected Content-Type application/json, got "
            f"{_shown(request.headers.get('content-type'))}",
        )
    body = await read_body(request, limit)
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise RequestError(400, "malformed JSON body: not UTF-8 text") from None
    except ValueError as exc:
        raise RequestError(400, f"malformed JSON body: {exc}") from None


async def read_uploads(request: Request, limit: int, max_files: int = 256) -> list[Upload]:
    """The file parts of a multipart/form-data body (form fields without a file are ignored).

    Raises:
        RequestError: 415 for another content type, 400 for a malformed body or one without
            a file, 413 past `limit` bytes or `max_files` files.
    """
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
    check_declared_length(request, limit)

    uploads: list[Upload] = []
    parser = _parser(boundary, uploads, max_files)
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            parser.write(chunk)
        parser.finalize()
    except RequestError:
        raise
    except Exception as exc:  # python-multipart's MultipartParseError and friends
        raise RequestError(400, f"malformed multipart body ({exc})") from None
    if not uploads:
        raise RequestError(
            400,
            "no file in the request: send the image as a multipart file "
            "field, e.g. curl -F file=@image.jpg",
        )
    return uploads


def _parser(boundary: bytes, uploads: list[Upload], max_files: int) -> MultipartParser:
    """A streaming multipart parser that appends each file part to `uploads` as it ends."""
    part: dict = {}
    header = {"name": b"", "value": b""}

    def on_part_begin():
        part.clear()
        part.update(headers={}, data=bytearray())

    def on_header_field(data, start, end):
        header["name"] += data[start:end]

    def on_header_value(data, start, end):
        header["value"] += data[start:end]

    def on_header_end():
        part["headers"][header["name"].lower()] = header["value"]
        header["name"], header["value"] = b"", b""

    def on_part_data(data, start, end):
        part["data"] += data[start:end]

    def on_part_end():
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition"))
        if b"filename" not in disposition:
            return  # a plain form field
        if len(uploads) >= max_files:
            raise RequestError(413, f"more than {max_files} file(s) in one request")
        uploads.append(
            Upload(
                field=disposition.get(b"name", b"").decode("utf-8", "replace"),
                filename=disposition[b"filename"].decode("utf-8", "replace"),
                content_type=part["headers"].get(b"content-type", b"").decode("latin-1"),
                data=bytes(part["data"]),
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


def _shown(value: str | None) -> str:
    if not value:
        return "none"
    return repr(value if len(value) <= 80 else value[:80] + "...")
