"""What decoding an image costs in memory, and the budget that bounds decodes across threads.

Why bytes, not pixels: what a decode holds follows more than the pixel count. Pillow keeps an
8-byte pointer per row (a 1×80,000,000 PNG holds 640 MB of them before a pixel is read), stores
RGB in 4 bytes a pixel, some modes are converted to a full-size copy, a progressive JPEG keeps
every DCT coefficient however small it is decoded, and a resize allocates coefficient tables in
proportion to the source's width and height, plus a temporary image. `load_cost` and
`resize_cost` add those up from the header, before any pixel is decoded; the decoder adds its
own conversions (`decode._fit_cost`).

Why two lanes: with one first-come-first-served queue, an image too large for the room left
made every image behind it wait, and one over the whole budget decoded alone, stalling all the
others for seconds. Now images costing up to `SMALL_IMAGE_BYTES` (ordinary photos, most data
sets) share the small lane; larger ones queue in their own, and one image may cost at most
`LARGE_LANE_BYTES`: anything dearer is refused instead of decoded alone. Memory held by decodes
in flight stays under the two lanes together (512 MB), whatever is thrown at it.

Example:
    with DECODE_BUDGET.reserve(load_cost(image, image.size)):
        image.load()
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import math
import threading
from collections.abc import Callable
from typing import Literal

from PIL import Image

MIB = 2**20
# The longest side read: the most JPEG, GIF and WebP can store is about this, and no camera or
# panorama within Pillow's pixel limit comes near it; a side past it is a crafted file.
MAX_SIDE = 65_535
SMALL_IMAGE_BYTES = 32 * MIB  # a 12 MP JPEG decoded at 1/2 scale, an 8 MP PNG
SMALL_LANE_BYTES = 128 * MIB
LARGE_LANE_BYTES = 384 * MIB  # also the most one image may cost: 45 MP with transparency
_ROW_POINTER = 8  # Pillow's per-row pointer
_FILTER_SUPPORT = {"nearest": 0.0, "bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0}


def pixel_bytes(mode: str) -> int:
    """Bytes Pillow stores a pixel of `mode` in (RGB and two-band modes take 4)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def image_bytes(size: tuple[int, int], mode: str) -> int:
    """Bytes of one Pillow image of `size` (width, height) and `mode`, row pointers included."""
    width, height = size
    return width * height * pixel_bytes(mode) + _ROW_POINTER * height


def load_cost(image: Image.Image, stored_size: tuple[int, int]) -> int:
    """Peak bytes of `image.load()` for an opened (maybe drafted) image.

    `stored_size` is the size in the file, before a JPEG draft: a progressive JPEG's decoder
    holds all of its DCT coefficients (2 bytes each) at that size.
    """
    cost = image_bytes(image.size, image.mode)
    if image.format == "WEBP":  # libwebp's canvases (measured: three more RGBA images)
        cost += 3 * image_bytes(image.size, "RGBA")
    elif image.format == "TIFF":  # libtiff reads a strip or a tile: at worst the whole image
        cost += image_bytes(image.size, "RGBA")
    elif image.info.get("progressive"):
        layers = getattr(image, "layer", None) or [(0, 1, 1, 0)] * 3
        most_h = max(layer[1] for layer in layers) or 1
        most_v = max(layer[2] for layer in layers) or 1
        share = sum(layer[1] * layer[2] for layer in layers) / (most_h * most_v)
        width, height = ((side + 15) // 16 * 16 for side in stored_size)  # whole MCUs
        cost += math.ceil(2 * share * width * height)
    return cost


def resize_cost(
    size: tuple[int, int], target: tuple[int, int], mode: str, interpolation: str
) -> int:
    """Bytes `decode._resize` allocates to resize `size` to `target` (width, height) in `mode`.

    Per axis, Pillow's coefficient table has, for each output pixel, 2 * support * scale + 1
    doubles; an image changing in both axes goes through a temporary one, resized along the
    axis that leaves it smaller first.
    """
    (width, height), (out_width, out_height) = size, target
    support = _FILTER_SUPPORT.get(interpolation, 3.0)
    cost = image_bytes(target, mode)
    if support:
        for source, out in ((width, out_width), (height, out_height)):
            taps = 2 * math.ceil(support * max(source / out, 1.0)) + 1
            cost += out * (8 * taps + 8)
    if width != out_width and height != out_height:
        cost += min(image_bytes((out_width, height), mode), image_bytes((width, out_height), mode))
    return cost


class _Lane:
    """Caps the bytes being decoded at once across threads, first come, first served.

    Callers are admitted in arrival order, so a large image is not starved by a stream of
    small ones in its lane.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._in_use = 0
        self._waiting: collections.deque = collections.deque()
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, cost: int):
        if cost > self.capacity:
            raise ValueError(f"a decode of {cost} bytes cannot fit a lane of {self.capacity}")
        turn = object()
        with self._changed:
            self._waiting.append(turn)
            try:
                self._changed.wait_for(
                    lambda: self._waiting[0] is turn and self._in_use + cost <= self.capacity
                )
            finally:
                # Admitted or interrupted (Ctrl-C while waiting): either way, out of the queue,
                # so no later caller waits for a turn that will never be taken.
                self._waiting.remove(turn)
                self._changed.notify_all()
            self._in_use += cost
        try:
            yield
        finally:
            with self._changed:
                self._in_use -= cost
                self._changed.notify_all()


class DecodeBudget:
    """The small and the large lane; `reserve(cost)` waits in the lane `cost` belongs to."""

    def __init__(self, small_image: int, small_lane: int, large_lane: int):
        self.small_image = small_image
        self.most = large_lane  # the dearest image admitted at all
        self._small = _Lane(small_lane)
        self._large = _Lane(large_lane)

    def is_large(self, cost: int) -> bool:
        return cost > self.small_image

    @contextlib.contextmanager
    def reserve(self, cost: int):
        """Holds `cost` bytes of its lane while the block runs; ValueError over `self.most`."""
        large = self.is_large(cost)
        with (self._large if large else self._small).reserve(cost):
            try:
                yield
            finally:
                if large:
                    _return_freed_memory()


def _return_freed_memory() -> None:
    """Hands memory freed by a large decode back to the OS (glibc only; a no-op elsewhere).

    Pillow allocates in 16 MB blocks, which glibc serves from the decoding thread's own arena
    and keeps after they are freed: without this, large PNGs decoded one at a time by several
    threads keep the process's peak as high as if they were all decoded at once, each thread's
    arena keeping its last one.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


# libc's malloc_trim; False where there is none, None until looked up.
_MALLOC_TRIM: Callable[[int], object] | Literal[False] | None = None

# Process-wide on purpose: the memory it protects is the process's.
DECODE_BUDGET = DecodeBudget(SMALL_IMAGE_BYTES, SMALL_LANE_BYTES, LARGE_LANE_BYTES)
