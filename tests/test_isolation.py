"""No tool call can take the server down: concurrency limits and worker processes for native code.

Two concurrent ``denoise.bm3d`` calls used to abort the whole server (the bm3d library's native
thread pool asserts); a tool whose process dies must fail alone.
"""

from __future__ import annotations

import base64
import os
import time

import anyio
import numpy as np
import pytest
from conftest import http_client, running

from tiragent.images import encode_image
from tiragent.server.app import ServerConfig
from tiragent.server.pool import ModelPool
from tiragent.server.registry import Cost, get_tool, register_tool, unregister
from tiragent.server.serve import http_app
from tiragent.tasks import Task

pytestmark = pytest.mark.anyio


def abort_on_white(image: np.ndarray, params: object) -> np.ndarray:
    """Test tool: aborts its process on an all-white image (as a failing native assertion would), else darkens."""
    if image.min() > 0.99:
        os.abort()
    return image * 0.5


def sleep_then_darken(image: np.ndarray, params: object) -> np.ndarray:
    """Test tool: takes five seconds."""
    time.sleep(5)
    return image * 0.5


@pytest.fixture
def crashing_tool():
    register_tool(Task.DENOISE, "abort_test", cost=Cost.LOW, isolated=True)(abort_on_white)
    register_tool(Task.DENOISE, "slow_test", cost=Cost.LOW, isolated=True)(sleep_then_darken)
    yield
    unregister("denoise.abort_test")
    unregister("denoise.slow_test")


def b64(image: np.ndarray) -> str:
    return base64.b64encode(encode_image(image)).decode()


def test_bm3d_declares_its_limit():
    spec = get_tool("denoise.bm3d")
    assert spec.concurrency == 1 and spec.isolated


def app(tmp_path):
    """One HTTP server: its lifespan (pool, store) is shared by every client, as in use."""
    return http_app(ServerConfig(roots=[tmp_path], preview_size=0), host="127.0.0.1", token=None, max_body_mb=16)


async def test_eight_concurrent_bm3d_calls_over_mcp_all_succeed(tmp_path):
    rng = np.random.default_rng(0)
    images = [np.clip(0.5 + rng.normal(0, 0.1, (32, 32, 3)), 0, 1).astype(np.float32) for _ in range(8)]
    results: list = [None] * 8

    async def one_client(url: str, i: int) -> None:  # eight clients, as eight assistants or rollouts would be
        async with http_client(url) as client:
            loaded = await client.call_tool("load_image", {"data": b64(images[i])})
            results[i] = await client.call_tool("denoise", {"image_id": loaded.structured_content["image_id"], "model": "bm3d", "sigma": 25})

    async with running(app(tmp_path)) as url, http_client(url) as watcher:
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one_client, url, i)
        status = (await watcher.call_tool("server_status", {})).structured_content
    assert all(not r.is_error for r in results), [r.content for r in results if r.is_error]
    assert status["pool"]["tools"]["denoise.bm3d"]["calls"] == 8 and status["pool"]["tools"]["denoise.bm3d"]["errors"] == 0


async def test_a_tool_that_aborts_its_process_fails_alone(tmp_path, crashing_tool, astronaut):
    white = np.ones((32, 32, 3), np.float32)
    async with running(app(tmp_path)) as url, http_client(url) as a, http_client(url) as b:
        white_id = (await a.call_tool("load_image", {"data": b64(white)})).structured_content["image_id"]
        photo_id = (await b.call_tool("load_image", {"data": b64(astronaut)})).structured_content["image_id"]
        outcomes: dict[str, object] = {}

        async def call(name: str, client, tool: str, args: dict) -> None:
            outcomes[name] = await client.call_tool(tool, args)

        async with anyio.create_task_group() as tg:  # the crash happens while other calls are in flight
            tg.start_soon(call, "crash", a, "denoise", {"image_id": white_id, "model": "abort_test"})
            tg.start_soon(call, "same tool", b, "denoise", {"image_id": photo_id, "model": "abort_test"})
            tg.start_soon(call, "thread tool", b, "denoise", {"image_id": photo_id, "model": "wavelet"})
            tg.start_soon(call, "learned tool", a, "dehaze", {"image_id": photo_id, "model": "unet"})
        crash = outcomes.pop("crash")
        assert crash.is_error and "worker process died" in crash.content[0].text and "SIGABRT" in crash.content[0].text
        assert all(not r.is_error for r in outcomes.values()), {k: r.content for k, r in outcomes.items() if r.is_error}
        later = await a.call_tool("denoise", {"image_id": photo_id, "model": "abort_test"})
        other = await b.call_tool("lowlight", {"image_id": photo_id, "model": "gamma"})
        assert not later.is_error and not other.is_error
        workers = (await a.call_tool("server_status", {})).structured_content["pool"]["process_workers"]
        assert workers["deaths"] == 1


async def test_a_timed_out_isolated_call_is_stopped_not_left_running(crashing_tool, astronaut):
    async with ModelPool() as pool:
        started = time.perf_counter()
        with pytest.raises(Exception, match="did not finish within 1 s"):
            await pool.call("denoise.slow_test", astronaut, timeout=1)
        assert time.perf_counter() - started < 4
        assert pool.workers.killed == 1
        result = await pool.call("denoise.abort_test", astronaut)  # a new worker serves the next call
        np.testing.assert_allclose(result.image, astronaut * 0.5, atol=1e-6)
