"""check_json_shape refuses what no TensorFlow Serving body needs, in bounded time."""

import json
import time

import pytest

from cnnclf.serve.json_shape import MAX_DEPTH, check_json_shape
from cnnclf.serve.settings import MAX_INSTANCES
from cnnclf.serve.uploads import RequestError


def test_valid_bodies_pass():
    one = {"image_bytes": {"b64": "QUJD" * 1000}}
    check_json_shape(json.dumps({"instances": [one] * MAX_INSTANCES}).encode())
    check_json_shape(bytearray(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH))


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"[" * 5000, 400, "nested more than"),
        (b"[" * (4 * 2**20), 400, "nested more than"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, 400, "nested more than"),
        (b'{"instances": [' + b",".join([b'{"b64": ""}'] * 100_000) + b"]}", 413, "instances"),
        (b"[" + b"0," * 100_000 + b"0]", 413, "instances"),
    ],
)
def test_hostile_bodies_are_refused_quickly(body, status, words):
    start = time.process_time()
    with pytest.raises(RequestError) as refused:
        check_json_shape(body)
    assert refused.value.status == status and words in refused.value.message
    assert time.process_time() - start < 1.0  # CPU time: C-speed counts, bounded Python
