"""assess_quality never scores the same pixels twice, and concurrent requests for one image share one computation."""

from __future__ import annotations

import anyio
import numpy as np
import pytest

from tiragent.server.metric_cache import MetricCache

pytestmark = pytest.mark.anyio


async def test_concurrent_requests_share_one_computation_and_later_ones_hit():
    cache, calls = MetricCache(), []

    async def compute(names):
        calls.append(list(names))
        await anyio.sleep(0.05)
        return {n: float(len(n)) for n in names if n != "ms_ssim"}  # ms_ssim: undefined at this size

    results = []

    async def ask():
        results.append(await cache.scores("img", "ref", ["psnr", "niqe", "ms_ssim"], lambda n: n != "niqe", compute))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(ask)
    assert calls == [["psnr", "niqe", "ms_ssim"]]  # once, not eight times
    assert all(r == {"psnr": 4.0, "niqe": 4.0} for r in results)  # the undefined one left out, in every answer
    assert await cache.scores("img", None, ["niqe"], lambda n: n != "niqe", compute) == {"niqe": 4.0}  # no-reference: any reference
    assert await cache.scores("img", "other", ["psnr"], lambda n: n != "niqe", compute) == {"psnr": 4.0}
    assert calls[-1] == ["psnr"] and cache.stats()["hits"] == 7 * 3 + 1


async def test_the_cache_is_bounded():
    cache = MetricCache(max_entries=3)

    async def compute(names):
        return {n: 1.0 for n in names}

    for i in range(10):
        await cache.scores(f"img{i}", None, ["niqe", "piqe"], lambda n: False, compute)
    assert cache.stats()["entries"] == 3


async def test_the_server_reports_hits_and_gives_the_same_scores(session, astronaut):
    image_id = await session.load(astronaut)
    noisy = await session.load(np.clip(astronaut + 0.05 * np.random.default_rng(0).standard_normal(astronaut.shape), 0, 1).astype(np.float32))
    first = await session.assess(noisy, image_id)
    again = await session.assess(noisy, image_id)
    assert first == again and {"psnr", "ssim", "niqe"} <= set(first)
    status = (await session.client.call_tool("server_status", {})).structured_content["metric_cache"]
    assert status["hits"] == status["misses"] >= len(first)  # the second call computed nothing (ms_ssim: undefined at 128 px, known so)
