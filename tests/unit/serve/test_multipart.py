"""parse_multipart: uploads are views into the one body buffer, and hostile bodies stop early."""

import time

import pytest

from cnnclf.serve.uploads import MAX_FORM_FIELDS, RequestError, parse_multipart


def _body(*parts: bytes, boundary=b"b") -> bytearray:
    return bytearray(
        b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts) + b"--b--\r\n"
    )


def _file(name: str, data: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode() + data


def test_files_are_views_into_the_body_not_copies():
    body = _body(
        _file("a.png", b"A" * 1000),
        b'Content-Disposition: form-data; name="x"\r\n\r\n1',
        _file("b.png", b"\r\n--bx\r\n" * 10),
    )
    uploads = parse_multipart(body, b"b", 8)
    assert [(u.filename, bytes(u.data)) for u in uploads] == [
        ("a.png", b"A" * 1000),
        ("b.png", b"\r\n--bx\r\n" * 10),
    ]
    assert all(isinstance(u.data, memoryview) and u.data.obj is body for u in uploads)


@pytest.mark.parametrize(
    ("parts", "status", "words"),
    [
        ([b'Content-Disposition: form-data; name="a"\r\n\r\n'] * 370_000, 413, "form fields"),
        ([_file("a.png", b"x")] * 3, 413, "more than 2 file"),
        ([b"X-Long: " + b"a" * 10_000 + b"\r\n" + _file("a.png", b"x")], 400, "malformed"),
        (
            [b"".join(b"X-%d: 1\r\n" % i for i in range(50)) + _file("a.png", b"x")],
            400,
            "malformed",
        ),
    ],
)
def test_hostile_bodies_stop_early(parts, status, words):
    body = _body(*parts)
    start = time.process_time()
    with pytest.raises(RequestError) as refused:
        parse_multipart(body, b"b", 2)
    assert refused.value.status == status and words in refused.value.message
    assert time.process_time() - start < 1.0
    assert MAX_FORM_FIELDS < 370_000
