from __future__ import annotations

import asyncio

import pytest

from tiragent.server.batching import BatchQueue, batch

pytestmark = pytest.mark.anyio


class Doubler:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    @batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        return [2 * x for x in items]


async def test_list_in_list_out_with_a_batch_cap():
    doubler = Doubler()
    results = await asyncio.gather(*(doubler(i) for i in range(10)))
    assert results == [2 * i for i in range(10)]
    assert [len(b) for b in doubler.batches] == [4, 4, 2]
    assert sorted(x for b in doubler.batches for x in b) == list(range(10))


async def test_each_instance_has_its_own_queue():
    a, b = Doubler(), Doubler()
    await asyncio.gather(a(1), b(2), a(3))
    assert sorted(map(sorted, a.batches)) == [[1, 3]] and b.batches == [[2]]


async def test_plain_function():
    @batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def square(items: list[int]) -> list[int]:
        return [x * x for x in items]

    assert await asyncio.gather(*(square(i) for i in range(5))) == [0, 1, 4, 9, 16]


async def test_a_raising_batch_fails_its_callers_and_the_queue_keeps_serving():
    calls = 0

    async def handler(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("device lost")
        return items

    queue = BatchQueue(handler, max_batch_size=8, batch_wait_timeout_s=0.01)
    first = await asyncio.gather(*(queue.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "device lost" in str(r) for r in first)
    assert await queue.submit(7) == 7
    await queue.aclose()


async def test_an_exception_result_fails_one_caller_alone():
    async def handler(items: list[int]) -> list[object]:
        return [ValueError(f"bad {x}") if x < 0 else x for x in items]

    queue = BatchQueue(handler, max_batch_size=8, batch_wait_timeout_s=0.01)
    results = await asyncio.gather(queue.submit(1), queue.submit(-1), queue.submit(2), return_exceptions=True)
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -1"
    await queue.aclose()


async def test_cancelled_callers_are_dropped_before_their_batch_runs():
    seen: list[list[int]] = []
    gate = asyncio.Event()

    async def handler(items: list[int]) -> list[int]:
        seen.append(list(items))
        await gate.wait()
        return items

    queue = BatchQueue(handler, max_batch_size=1, batch_wait_timeout_s=0.0)
    first = asyncio.create_task(queue.submit(1))
    await asyncio.sleep(0.01)  # batch [1] is running and blocked on the gate
    second = asyncio.create_task(queue.submit(2))
    third = asyncio.create_task(queue.submit(3))
    await asyncio.sleep(0.01)
    second.cancel()
    gate.set()
    assert await first == 1 and await third == 3
    assert seen == [[1], [3]]
    await queue.aclose()


def test_bad_batch_size():
    async def handler(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError, match="max_batch_size must be at least 1"):
        BatchQueue(handler, max_batch_size=0)


@pytest.mark.parametrize("concurrent", [1, 2])
async def test_concurrent_batches_overlap_only_when_allowed(concurrent):
    """With two concurrent batches, the next batch is handed over while one is still running."""
    running, peak, release = 0, 0, asyncio.Event()

    async def handler(items: list[int]) -> list[int]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2 or concurrent == 1:  # let the batches go once the overlap (if any) has shown
            release.set()
        await release.wait()
        running -= 1
        return items

    queue = BatchQueue(handler, max_batch_size=1, batch_wait_timeout_s=0, max_concurrent_batches=concurrent)
    assert await asyncio.wait_for(asyncio.gather(*(queue.submit(i) for i in range(4))), 5) == [0, 1, 2, 3]
    assert peak == concurrent
    await queue.aclose()
    with pytest.raises(ValueError, match="max_concurrent_batches"):
        BatchQueue(handler, max_concurrent_batches=0)
