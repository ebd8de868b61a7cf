"""BodyBudget: bodies wait for room, small ones pass a flood of large ones, and 503 past wait."""

import asyncio

import pytest

from cnnclf.serve.budget import BodyBudget
from cnnclf.serve.uploads import RequestError

MB = 2**20


def test_large_bodies_wait_then_get_503_with_retry_after():
    async def main():
        budget = BodyBudget(10 * MB, wait_s=0.2)
        async with budget.hold(6 * MB):
            with pytest.raises(RequestError) as busy:
                async with budget.hold(6 * MB):
                    pass
        return busy.value, budget.used

    error, used = asyncio.run(main())
    assert error.status == 503 and error.headers == {"Retry-After": "1"}
    assert "--max-bodies-mb" in error.message and used == 0


def test_a_waiting_body_runs_when_room_is_freed_and_small_ones_pass_a_full_budget():
    order = []

    async def holder(budget, size, name, seconds):
        async with budget.hold(size):
            order.append(name)
            await asyncio.sleep(seconds)

    async def main():
        idle = []
        budget = BodyBudget(10 * MB, wait_s=5, on_idle=lambda: idle.append(True))
        first = asyncio.create_task(holder(budget, 10 * MB, "first", 0.2))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(holder(budget, 8 * MB, "second", 0))
        await asyncio.sleep(0.05)
        await holder(budget, MB // 2, "small", 0)  # the headroom: no wait behind "first"
        await asyncio.gather(first, second)
        return budget.used, idle

    used, idle = asyncio.run(main())
    assert order == ["first", "small", "second"] and used == 0 and idle


def test_one_body_larger_than_the_budget_still_runs_alone():
    async def main():
        budget = BodyBudget(MB, wait_s=0.1)
        async with budget.hold(50 * MB):
            return budget.used

    assert asyncio.run(main()) == MB
