"""A bound on the request bodies held in memory at once (`--max-bodies-mb`).

Why: each upload is held whole while it is decoded and predicted, so 48 clients sending
20 MB at once cost a gigabyte. A request reserves its body's size before reading it; when
the bodies in memory already fill the budget it waits (its bytes stay in the client's
socket, not here), and after `wait_s` it gets 503 with Retry-After. Small bodies (a normal
photo) may use an extra eighth of the budget, so a flood of large uploads does not hold them
up. One request larger than the whole budget still runs, alone.

Example:
    budget = BodyBudget(80 * 2**20)
    async with budget.hold(len_of_body):
        ...  # read, parse, predict
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

from cnnclf.serve.uploads import RequestError

DEFAULT_WAIT_S = 5.0
RETRY_AFTER_S = 1


class BodyBudget:
    """Bytes of request bodies in memory now, and the most there may be.

    Args:
        total: the budget in bytes.
        wait_s: how long a request waits for room before its 503.
        on_idle: called when the budget empties after at least `total` bytes passed
            through it (`cnnclf serve` hands freed memory back to the system there).
    """

    def __init__(
        self,
        total: int,
        wait_s: float = DEFAULT_WAIT_S,
        on_idle: Callable[[], None] | None = None,
    ):
        self.total = max(1, int(total))
        self.small = max(1, self.total // 16)  # bodies this size may use the headroom
        self.headroom = self.total // 8
        self.wait_s = wait_s
        self.on_idle = on_idle
        self.used = 0
        self._since_idle = 0
        self._waiters: list[asyncio.Future] = []

    def fits(self, size: int) -> bool:
        limit = self.total + (self.headroom if size <= self.small else 0)
        return self.used == 0 or self.used + size <= limit

    @asynccontextmanager
    async def hold(self, size: int):
        """Reserves `size` bytes (at most the whole budget) for the block's duration.

        Raises:
            RequestError: 503 with Retry-After when no room came within `wait_s`.
        """
        size = min(max(0, size), self.total)
        await self._acquire(size)
        try:
            yield
        finally:
            self._release(size)

    async def _acquire(self, size: int) -> None:
        deadline = time.monotonic() + self.wait_s
        loop = asyncio.get_running_loop()
        while not self.fits(size):
            remaining = deadline - time.monotonic()
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                raise RequestError(
                    503,
                    f"busy: {self.used / 2**20:.0f} MB of request bodies in memory already "
                    f"(--max-bodies-mb {self.total / 2**20:g}); retry in a moment",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                ) from None
            finally:
                self._waiters.remove(waiter)
        self.used += size

    def _release(self, size: int) -> None:
        self.used -= size
        self._since_idle += size
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self.used == 0 and self._since_idle >= self.total and self.on_idle is not None:
            self._since_idle = 0
            self.on_idle()
