"""Backpressure: past the pool's limits a call fails at once with a clear 'server busy, retry' error and its retry-after
hint as data; the calls admitted finish, other clients keep going, and the server keeps serving."""

from __future__ import annotations

import base64
import time

import anyio
import numpy as np
import pytest
from conftest import http_client, running

from tiragent.errors import RETRY_AFTER_META
from tiragent.images import encode_image
from tiragent.server.app import ServerConfig
from tiragent.server.pool import PoolConfig
from tiragent.server.registry import Cost, register_tool, unregister
from tiragent.server.serve import http_app
from tiragent.tasks import Task

pytestmark = pytest.mark.anyio


def slow_darken(image: np.ndarray, params: object) -> np.ndarray:
    """Test tool: takes half a second."""
    time.sleep(0.5)
    return image * 0.5


@pytest.fixture
def slow_tool():
    register_tool(Task.LOWLIGHT, "slow_bp_test", cost=Cost.LOW)(slow_darken)
    yield
    unregister("lowlight.slow_bp_test")


async def test_a_burst_past_the_limit_gets_busy_errors_at_once_and_the_rest_succeed(tmp_path, slow_tool):
    app = http_app(ServerConfig(roots=[tmp_path], preview_size=0), host="127.0.0.1", token=None, max_body_mb=16,
                   pool_config=PoolConfig(max_in_flight=4, cpu_workers=4))  # fmt: skip
    image = base64.b64encode(encode_image(np.full((16, 16, 3), 0.8, np.float32))).decode()
    outcomes: list[tuple[bool, float, dict]] = []

    async def one_client(url: str) -> None:
        async with http_client(url) as client:
            loaded = (await client.call_tool("load_image", {"data": image})).structured_content["image_id"]
            started = time.perf_counter()
            result = await client.call_tool("lowlight", {"image_id": loaded, "model": "slow_bp_test"})
            outcomes.append((result.is_error, time.perf_counter() - started, {"text": result.content[0].text, "meta": result.meta or {}}))

    async with running(app) as url, http_client(url) as watcher:
        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(one_client, url)
        status = (await watcher.call_tool("server_status", {})).structured_content
        after = await watcher.call_tool("lowlight", {"image_id": (await watcher.call_tool("load_image", {"data": image})).structured_content["image_id"],
                                                     "model": "gamma"})  # fmt: skip
    busy = [o for o in outcomes if o[0]]
    done = [o for o in outcomes if not o[0]]
    assert len(outcomes) == 12 and len(done) >= 4 and len(busy) >= 1
    fastest = min(seconds for _, seconds, _ in done)  # an admitted call: the tool's 0.5 s plus the machine's overhead
    for _, seconds, info in busy:
        # at once, not after a wait: sooner than any admitted call by at least half the tool's time (relative, so that
        # the HTTP overhead of twelve clients on a loaded 2-core machine counts on both sides)
        assert "server busy" in info["text"] and "retry in about" in info["text"] and seconds < fastest - 0.25
        assert info["meta"][RETRY_AFTER_META] > 0  # the hint as data
    stats = status["pool"]["tools"]["lowlight.slow_bp_test"]
    assert stats["busy"] == len(busy) and stats["calls"] == len(done) and stats["errors"] == 0
    assert status["pool"]["limits"] == {"max_in_flight": 4, "max_queue": 256} and status["pool"]["in_flight"] == 0
    assert not after.is_error  # the server keeps serving


async def test_the_limits_are_settings_of_serve():
    from tiragent.cli import build_parser, from_args

    args = build_parser().parse_args(["serve", "--max-in-flight", "8", "--max-queue", "3"])
    config = from_args(PoolConfig, args)
    assert (config.max_in_flight, config.max_queue) == (8, 3)


async def test_the_agent_s_session_waits_as_told_and_retries(tmp_path, slow_tool):
    from tiragent.agent.actions import Action
    from tiragent.agent.session import ToolSession

    app = http_app(ServerConfig(roots=[tmp_path], preview_size=0), host="127.0.0.1", token=None, max_body_mb=16,
                   pool_config=PoolConfig(max_in_flight=1, cpu_workers=2))  # fmt: skip
    results = []

    async def rollout(url: str, value: float) -> None:
        async with http_client(url) as client:
            session = ToolSession(client)
            image_id = await session.load(np.full((16, 16, 3), value, np.float32))
            results.append(await session.apply(Action("lowlight", "slow_bp_test"), image_id))

    async with running(app) as url, http_client(url) as watcher:
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(rollout, url, 0.2 + 0.2 * i)
        stats = (await watcher.call_tool("server_status", {})).structured_content["pool"]["tools"]["lowlight.slow_bp_test"]
    assert len(results) == 3 and stats["calls"] == 3 and stats["busy"] >= 1  # refused at first, done after waiting


async def test_a_queued_call_whose_client_left_is_never_run():
    from tiragent.server.pool import ModelPool

    ran: list[float] = []

    def record(image: np.ndarray, params: object) -> np.ndarray:
        """Test tool: records the images it ran on."""
        ran.append(float(image.mean()))
        time.sleep(0.3)
        return image

    register_tool(Task.LOWLIGHT, "record_bp_test", cost=Cost.LOW)(record)
    try:
        async with ModelPool(PoolConfig(cpu_workers=1)) as pool:
            first = np.full((8, 8, 3), 0.25, np.float32)
            second = np.full((8, 8, 3), 0.75, np.float32)
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.call, "lowlight.record_bp_test", first)
                await anyio.sleep(0.05)  # the first runs on the one CPU worker
                with anyio.move_on_after(0.1):  # the second waits for the worker; its client gives up
                    await pool.call("lowlight.record_bp_test", second)
            stats = pool.stats()["tools"]["lowlight.record_bp_test"]
            await pool.call("lowlight.record_bp_test", first)  # later calls still run
    finally:
        unregister("lowlight.record_bp_test")
    assert ran == [0.25, 0.25] and stats["cancelled"] == 1 and stats["errors"] == 0


async def test_over_mcp_a_queued_call_whose_client_disconnects_is_never_run(tmp_path):
    ran: list[float] = []

    def hold(image: np.ndarray, params: object) -> np.ndarray:
        """Test tool: holds the only CPU worker for a second."""
        time.sleep(1.0)
        return image

    def record(image: np.ndarray, params: object) -> np.ndarray:
        """Test tool: records the images it ran on."""
        ran.append(float(image.mean()))
        return image

    register_tool(Task.LOWLIGHT, "hold_mcp_test", cost=Cost.LOW)(hold)
    register_tool(Task.LOWLIGHT, "record_mcp_test", cost=Cost.LOW)(record)
    app = http_app(ServerConfig(roots=[tmp_path], preview_size=0), host="127.0.0.1", token=None, max_body_mb=16,
                   pool_config=PoolConfig(cpu_workers=1))  # fmt: skip
    image = base64.b64encode(encode_image(np.full((8, 8, 3), 0.5, np.float32))).decode()
    try:
        async with running(app) as url:

            async def holder() -> None:
                async with http_client(url) as client:
                    loaded = (await client.call_tool("load_image", {"data": image})).structured_content["image_id"]
                    await client.call_tool("lowlight", {"image_id": loaded, "model": "hold_mcp_test"})

            async def leaver() -> None:
                async with http_client(url) as client:
                    loaded = (await client.call_tool("load_image", {"data": image})).structured_content["image_id"]
                    await anyio.sleep(0.3)  # the holder's call is running
                    with anyio.move_on_after(0.3):  # queued behind it; then this client goes away
                        await client.call_tool("lowlight", {"image_id": loaded, "model": "record_mcp_test"})

            async with anyio.create_task_group() as tg:
                tg.start_soon(holder)
                tg.start_soon(leaver)
            await anyio.sleep(0.5)
            async with http_client(url) as watcher:
                stats = (await watcher.call_tool("server_status", {})).structured_content["pool"]["tools"]
    finally:
        unregister("lowlight.hold_mcp_test")
        unregister("lowlight.record_mcp_test")
    assert ran == []  # the queued call never ran
    assert stats["lowlight.record_mcp_test"]["cancelled"] == 1 and stats["lowlight.hold_mcp_test"]["errors"] == 0


async def test_a_restarted_server_finds_what_was_stored_or_says_clearly_it_cannot(tmp_path):
    from tiragent.images import decode_image

    store = tmp_path / "store"
    config = ServerConfig(roots=[tmp_path], preview_size=0, store_dir=store, store_memory_mb=0.01)  # every image spills to disk
    images = [np.full((32, 32, 3), v, np.float32) for v in (0.25, 0.5, 0.75)]  # the newest in memory, kept at shutdown
    async with running(http_app(config, host="127.0.0.1", token=None, max_body_mb=16)) as url, http_client(url) as client:
        ids = [(await client.call_tool("load_image", {"data": base64.b64encode(encode_image(im)).decode()})).structured_content["image_id"]
               for im in images]  # fmt: skip
    damaged = store / f"{ids[1]}.npy"
    damaged.write_bytes(damaged.read_bytes()[:200])  # as a crash of a server that wrote non-atomically would leave it
    async with running(http_app(config, host="127.0.0.1", token=None, max_body_mb=16)) as url, http_client(url) as client:
        found = await client.call_tool("get_image", {"image_id": ids[0], "format": "png"})
        truncated = await client.call_tool("get_image", {"image_id": ids[1], "format": "png"})
        unknown = await client.call_tool("get_image", {"image_id": "img_00000000deadbeef", "format": "png"})
        kept = await client.call_tool("get_image", {"image_id": ids[2], "format": "png"})
    assert not found.is_error and np.abs(decode_image(base64.b64decode(found.content[0].data)) - images[0]).max() < 1 / 255
    assert truncated.is_error and "unreadable" in truncated.content[0].text  # never a truncated image
    assert unknown.is_error and "unknown image_id" in unknown.content[0].text
    assert not kept.is_error and np.abs(decode_image(base64.b64decode(kept.content[0].data)) - images[2]).max() < 1 / 255
