"""Micro-batching: requests that arrive together share one model call.

A single model call on 32 images costs little more than on one, so under load the server
gathers what is waiting into one batch, as TensorFlow Serving's batcher does. A batch takes
every image already queued, never more than `max_batch_size`. It waits for more, at most
`max_wait_ms` after its first image, only while images are known to be on their way (announced
with `expect` when their decoding starts): a lone request is never delayed, and a burst that
is still decoding is not split into a batch of one and a batch of the rest. The model runs on
one thread of its own, so the event loop keeps accepting requests (and decoding runs in
another pool) while a batch is computed; what arrives meanwhile forms the next batch.

Batches are padded up to a power of two (1, 2, 4, ... `max_batch_size`): the model sees a
handful of input shapes, each traced once during warm-up, instead of one per batch length.

Example:
    batcher = MicroBatcher(bundle.model.predict_on_batch, max_batch_size=32, max_wait_ms=5)
    await batcher.start()
    batcher.expect(1)                    # an image is being decoded
    row = await batcher.submit(pixels)   # the model's output row for this image
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def padded_sizes(max_batch_size: int) -> list[int]:
    """The batch lengths the model is called with: powers of two, then `max_batch_size`."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch_size]


class MicroBatcher:
    """Gathers single images into bounded batches for one model function.

    Args:
        predict: takes a float32 array [N, H, W, C] and returns [N, K] outputs.
        max_batch_size: at most this many images per model call.
        max_wait_ms: how long the first image of a batch waits for more to arrive.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1. Received: {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0. Received: {max_wait_ms}")
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self._sizes = padded_sizes(max_batch_size)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        # One thread: the model is called from one place, in order; TensorFlow parallelises
        # inside the call.
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.batches = 0
        self.images = 0
        self.expected = 0  # images announced by `expect`, not yet submitted

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Finishes the batches already queued, then stops."""
        if self._task is not None:
            assert self._queue is not None  # set by start, with the task
            await self._queue.put(None)
            await self._task
            self._task = None
        self.model_thread.shutdown(wait=True)

    def expect(self, n: int) -> None:
        """Announces `n` images that will be submitted soon (or withdrawn with -n)."""
        self.expected = max(0, self.expected + n)

    async def submit(self, pixels: np.ndarray, expected: bool = True) -> np.ndarray:
        """The model's output row for one decoded image (uint8 or float, shape [H, W, C]).

        `expected`: this image was announced with `expect(1)` (it no longer is, now).
        """
        if self._task is None or self._task.done():
            raise RuntimeError("the micro-batcher is not running")
        if expected:
            self.expect(-1)
        future = asyncio.get_running_loop().create_future()
        assert self._queue is not None  # set by start, with the task
        await self._queue.put((pixels, future))
        return await future

    def run_padded(self, arrays: list[np.ndarray]) -> np.ndarray:
        """One model call on `arrays`, padded to the next allowed batch length."""
        size = next(s for s in self._sizes if s >= len(arrays))
        x = np.zeros((size, *arrays[0].shape), np.float32)
        x[: len(arrays)] = np.stack(arrays)
        return np.asarray(self.predict(x))[: len(arrays)]

    def warm_up(self, shape: tuple[int, int, int]) -> None:
        """Calls the model once at every padded batch length (each traced before serving)."""
        for size in self._sizes:
            self.run_padded([np.zeros(shape, np.uint8)] * size)

    async def _run(self) -> None:
        assert self._queue is not None  # start sets it before creating this task
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is None:
                break
            batch = [item]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch_size:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0 or not self.expected:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._call(loop, batch)

    async def _call(self, loop, batch) -> None:
        live = [(pixels, future) for pixels, future in batch if not future.cancelled()]
        if not live:
            return
        try:
            outputs = await loop.run_in_executor(
                self.model_thread, self.run_padded, [pixels for pixels, _ in live]
            )
        except Exception as exc:  # the model failed: every waiting request hears why
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.images += len(live)
        for (_, future), row in zip(live, outputs):
            if not future.done():
                future.set_result(row)
