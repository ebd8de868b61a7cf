"""The decode budget (cnnclf/data/decode_budget.py): costs from headers, two lanes, a cap.

Whatever waits here runs in a thread joined with a bound, so a regression fails, not hangs.
"""

import io
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from PIL import Image

from cnnclf.data import decode
from cnnclf.data.decode import ImageSpec, decode_image_bytes, is_large_upload
from cnnclf.data.decode_budget import (
    MIB,
    DecodeBudget,
    image_bytes,
    load_cost,
    resize_cost,
)
from cnnclf.errors import ImageError


def encoded(image: Image.Image, fmt="PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_row_pointers_and_both_sides_count_not_only_pixels():
    # 80 M pixels of L are 80 MB of pixels but 720 MB with Pillow's 8-byte row pointers, and
    # a resize's coefficient tables follow the source's height as much as its width.
    assert image_bytes((1, 80_000_000), "L") == 720_000_000
    assert image_bytes((100, 100), "RGB") == 100 * 100 * 4 + 800
    tall = resize_cost((1, 1_000_000), (64, 64), "L", "bilinear")
    wide = resize_cost((1_000_000, 1), (64, 64), "L", "bilinear")
    assert 16_000_000 < tall < 17_000_000 and 16_000_000 < wide < 17_000_000
    assert resize_cost((1, 1_000_000), (64, 64), "L", "lanczos") > 3 * tall - 1_000_000


def test_a_progressive_jpeg_costs_its_coefficients_however_small_it_is_drafted():
    image = Image.new("RGB", (1600, 1200), (90, 20, 200))
    for progressive, at_least in ((False, 0), (True, 2 * 1.5 * 1600 * 1200)):
        opened = Image.open(io.BytesIO(encoded(image, "JPEG", progressive=progressive)))
        stored = opened.size
        opened.draft("RGB", (64, 64))
        assert opened.size == (200, 150)
        assert load_cost(opened, stored) - image_bytes((200, 150), "RGB") >= at_least


def run_in_thread(fn, *args):
    """(thread, outcome dict) of fn(*args) started in a daemon thread."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_small_decodes_never_wait_behind_large_ones():
    budget = DecodeBudget(small_image=10, small_lane=20, large_lane=100)
    held, release = threading.Event(), threading.Event()

    def hold(cost):
        with budget.reserve(cost):
            held.set()
            release.wait(30)

    def take(cost):
        with budget.reserve(cost):
            return cost

    first, _ = run_in_thread(hold, 90)
    assert held.wait(10)
    waiting, outcome = run_in_thread(take, 60)  # does not fit beside the first: waits
    waiting.join(0.2)
    assert waiting.is_alive()
    small, small_outcome = run_in_thread(take, 10)  # in its own lane: admitted at once
    small.join(5)
    assert small_outcome == {"value": 10}
    release.set()
    for thread in (first, waiting):
        thread.join(10)
        assert not thread.is_alive()
    assert outcome == {"value": 60}


def test_more_than_one_image_may_cost_is_refused_not_decoded_alone(monkeypatch):
    monkeypatch.setattr(decode, "DECODE_BUDGET", DecodeBudget(MIB, 2 * MIB, 8 * MIB))
    data = encoded(Image.new("RGB", (1200, 1200), (10, 200, 10)))
    with pytest.raises(ImageError) as info:
        decode_image_bytes(data, ImageSpec((16, 16)), "big.png")
    assert info.value.reason.startswith(
        "too large to decode: its 1200x1200 RGB pixels would need about 11 MB, "
    )
    assert info.value.reason.endswith("over the 8 MB one image may use; downscale it")
    with pytest.raises(ImageError, match="too large to decode"):
        is_large_upload(data, ImageSpec((16, 16)))
    small = encoded(Image.new("RGB", (100, 100)))
    assert not is_large_upload(small, ImageSpec((16, 16)))
    assert is_large_upload(encoded(Image.new("L", (1000, 1000))), ImageSpec((16, 16)))
    assert decode_image_bytes(small, ImageSpec((16, 16))).shape == (16, 16, 3)


@pytest.mark.parametrize(
    "mode, size",
    [("RGBA", (2400, 2400)), ("RGB", (900, 6000)), ("P", (2400, 2400)), ("I;16", (2400, 2400))],
)
def test_the_estimate_covers_what_a_decode_really_takes(tmp_path, mode, size):
    # Peak RSS of one decode in a fresh process against the estimate: the estimate must not
    # be short (memory would exceed the budget), nor far over (decodes would wait for nothing).
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    gray = ((x // 50 + y // 70) % 2 * 150 + x % 40).astype(np.uint8)
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 250)
    else:
        image = Image.fromarray(np.stack([gray, 255 - gray, gray // 2, gray], -1), "RGBA")
        image = image.convert(mode) if mode != "P" else image.convert("RGB").convert("P")
    path = tmp_path / "large.png"
    image.save(path, **({"transparency": 0} if mode == "P" else {}))
    script = textwrap.dedent(f"""
        from cnnclf.data.decode import ImageSpec, _decoding, _draft, _fit_cost, load_image

        def status(key):  # VmHWM, unlike ru_maxrss, starts afresh at exec
            with open("/proc/self/status") as file:
                line = next(line for line in file if line.startswith(key + ":"))
            return int(line.split()[1]) * 1024

        spec = ImageSpec((224, 224), "rgb", "bicubic")
        with _decoding({str(path)!r}) as image:
            estimate = _fit_cost(image, spec, _draft(image, spec))
        before = status("VmRSS")
        load_image({str(path)!r}, spec)
        print(estimate, status("VmHWM") - before)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    estimate, measured = map(int, done.stdout.split())
    assert measured <= estimate * 1.1 + 4 * MIB, (estimate, measured)
    assert estimate <= measured * 1.5 + 8 * MIB, (estimate, measured)
