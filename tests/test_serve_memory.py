"""A real `cnnclf serve` process under concurrent large uploads: its memory stays bounded by
--max-bodies-mb and goes back near idle afterwards (issue #30, item 5)."""

import os
import threading
import urllib.error
import urllib.request
import uuid

import pytest
from helpers import communicate, start_server

MB = 2**20


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def upload(url: str, body: bytes, content_type: str, codes: list) -> None:
    request = urllib.request.Request(
        url + "/predict", data=body, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            codes.append(response.status)
    except urllib.error.HTTPError as error:
        codes.append(error.code)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_concurrent_large_uploads_stay_bounded_and_memory_returns(binary_bundle):
    process, url = start_server(binary_bundle, "--max-upload-mb", "6")
    try:
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                'filename="big.png"\r\n\r\n'
            ).encode()
            + b"\x89PNG"
            + os.urandom(5 * MB)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        content_type = f"multipart/form-data; boundary={boundary}"
        upload(url, body, content_type, [])  # the first upload's own allocations
        idle = rss_mb(process.pid)
        peak, codes = idle, []
        for _ in range(2):  # a second round must not grow on the first's leftovers
            threads = [
                threading.Thread(target=upload, args=(url, body, content_type, codes))
                for _ in range(16)
            ]
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                peak = max(peak, rss_mb(process.pid))
                for thread in threads:
                    thread.join(timeout=0.01)
        after = rss_mb(process.pid)
    finally:
        process.terminate()
        communicate(process, "the server to exit after SIGTERM")
    # Random bytes behind a PNG signature: every upload read whole, then refused by the decoder.
    assert codes == [422] * 32, codes
    # 16 bodies of 5 MB were 160 MB held twice before; now at most 4 x 6 MB are in memory.
    assert peak < idle + 100, (idle, peak)
    assert after < idle + 32, (idle, after)
