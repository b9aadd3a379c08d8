from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch
from pydantic import Field
from torch import nn

from tiragent.errors import ImageError, ParameterError, ToolExecutionError, ToolNotFoundError, ToolTimeoutError
from tiragent.server.pool import ModelPool, PoolConfig
from tiragent.server.registry import ModelDescriptor, ToolParams, register_tool, register_torch_tool, unregister
from tiragent.server.tiling import tile_grid
from tiragent.tasks import Task

pytestmark = pytest.mark.anyio


class Smooth(nn.Module):
    """A 3x3 box blur written as a convolution (deterministic, translation-equivariant)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False, padding_mode="reflect")
        nn.init.constant_(self.conv.weight, 1 / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upscale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=2, mode="nearest")


class FailsOnBright(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.flatten(1).mean(1) > 0.9).any():
            raise RuntimeError("bright input rejected")
        return x


class Gain(ToolParams):
    gain: float = Field(1.0, ge=0, le=2, description="Multiplier.")


class Scaler(nn.Module):
    def forward(self, x: torch.Tensor, gain: float) -> torch.Tensor:
        return x * gain


class Big(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(64, 1024))  # 256 KB

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(scope="module", autouse=True)
def test_tools():
    specs = {
        "denoise.t_smooth": (Smooth, ModelDescriptor(multiple_of=8, tile_size=64, tile_overlap=16), None),
        "sr.t_up2": (Upscale, ModelDescriptor(scale=2, tile_size=48, tile_overlap=8), None),
        "denoise.t_fragile": (FailsOnBright, ModelDescriptor(), None),
        "lowlight.t_gain": (Scaler, ModelDescriptor(), Gain),
        "dehaze.t_big1": (Big, ModelDescriptor(), None),
        "dehaze.t_big2": (Big, ModelDescriptor(), None),
    }
    for key, (cls, descriptor, params) in specs.items():
        task, name = key.split(".")
        register_torch_tool(task, name, cost="low", descriptor=descriptor, params=params or ToolParams, description=f"test tool {key}")(cls)

    @register_tool(Task.DERAIN, "t_slow", cost="high")
    def slow(image: np.ndarray, p: ToolParams) -> np.ndarray:
        """Sleeps for half a second: a stand-in for an expensive classical tool."""
        time.sleep(0.5)
        return image

    @register_tool(Task.DERAIN, "t_threads", cost="low")
    def threads(image: np.ndarray, p: ToolParams) -> np.ndarray:
        """Records the thread it ran on, meets a second call at a barrier, then waits for the event loop's signal."""
        THREADS.add(threading.current_thread().name)
        BARRIER.wait(timeout=10)  # raises BrokenBarrierError unless a second call arrives meanwhile
        BOTH_INSIDE.set()
        if not LOOP_TICKED.wait(timeout=10):
            raise RuntimeError("the event loop never ran while the tools worked")
        return image

    yield
    for key in [*specs, "derain.t_slow", "derain.t_threads"]:
        unregister(key)


THREADS: set[str] = set()
BARRIER = threading.Barrier(2)
BOTH_INSIDE = threading.Event()
LOOP_TICKED = threading.Event()


def image(h: int = 40, w: int = 40, value: float | None = None, seed: int = 0) -> np.ndarray:
    if value is not None:
        return np.full((h, w, 3), value, np.float32)
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


async def test_concurrent_calls_are_batched():
    async with ModelPool(PoolConfig(max_batch_size=8, batch_wait_ms=20)) as pool:
        results = await asyncio.gather(*(pool.call("denoise.t_smooth", image(seed=i)) for i in range(16)))
        stats = pool.stats()["tools"]["denoise.t_smooth"]
    assert stats["calls"] == 16 and stats["batches"] < 16 and stats["mean_batch_size"] > 2
    assert max(r.batch_size for r in results) > 1
    ref = Smooth()
    for i, r in enumerate(results):
        expected = ref(torch.from_numpy(image(seed=i)).permute(2, 0, 1)[None]).detach()[0].permute(1, 2, 0).numpy()
        assert np.allclose(r.image, expected, atol=1e-5)


async def test_odd_sizes_are_padded_and_cropped_back():
    async with ModelPool() as pool:
        r = await pool.call("denoise.t_smooth", image(37, 29))
    assert r.image.shape == (37, 29, 3)


async def test_large_inputs_are_tiled_and_stitched_seamlessly():
    big = image(150, 130, seed=3)
    assert len(tile_grid(150, 130, 64, 16)) > 4
    async with ModelPool(PoolConfig(max_batch_size=4)) as pool:
        r = await pool.call("denoise.t_smooth", big)
        up = await pool.call("sr.t_up2", big)
    whole = Smooth()(torch.from_numpy(big).permute(2, 0, 1)[None]).detach()[0].permute(1, 2, 0).numpy()
    assert r.image.shape == big.shape
    # Away from tile borders the 3x3 blur sees the same pixels, so tiling must not change it.
    assert np.abs(r.image - whole)[2:-2, 2:-2].max() < 1e-5
    assert r.batch_size > 1
    assert up.image.shape == (300, 260, 3)
    assert np.allclose(up.image[::2, ::2], big, atol=1e-6)


async def test_a_failing_input_fails_alone_and_the_pool_keeps_serving():
    async with ModelPool(PoolConfig(max_batch_size=8, batch_wait_ms=20)) as pool:
        inputs = [image(value=0.2), image(value=0.95), image(value=0.3)]
        results = await asyncio.gather(*(pool.call("denoise.t_fragile", x) for x in inputs), return_exceptions=True)
        assert isinstance(results[1], ToolExecutionError) and "bright input rejected" in str(results[1])
        assert np.allclose(results[0].image, 0.2) and np.allclose(results[2].image, 0.3)
        again = await pool.call("denoise.t_fragile", image(value=0.1))
        assert np.allclose(again.image, 0.1)
        assert pool.stats()["tools"]["denoise.t_fragile"]["errors"] == 1


async def test_parameters_reach_the_model_and_split_batches():
    async with ModelPool(PoolConfig(max_batch_size=8, batch_wait_ms=20)) as pool:
        a, b = await asyncio.gather(
            pool.call("lowlight.t_gain", image(value=0.4), {"gain": 2.0}),
            pool.call("lowlight.t_gain", image(value=0.4), {"gain": 0.5}),
        )
    assert np.allclose(a.image, 0.8) and np.allclose(b.image, 0.2)


async def test_timeout_then_the_pool_still_works():
    async with ModelPool(PoolConfig(cpu_workers=2)) as pool:
        with pytest.raises(ToolTimeoutError, match=r"derain.t_slow did not finish within 0.1 s"):
            await pool.call("derain.t_slow", image(), timeout=0.1)
        ok = await pool.call("denoise.wavelet", image())
        assert ok.image.shape == (40, 40, 3)
        assert pool.stats()["tools"]["derain.t_slow"]["timeouts"] == 1


async def test_cancelled_call_is_counted_and_others_finish():
    async with ModelPool() as pool:
        slow = asyncio.create_task(pool.call("derain.t_slow", image()))
        fast = asyncio.create_task(pool.call("dehaze.dcp", image()))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert (await fast).image.shape == (40, 40, 3)
        assert pool.stats()["tools"]["derain.t_slow"]["cancelled"] == 1


async def test_classical_tools_run_concurrently_off_the_event_loop():
    """Two calls must be inside the tool at once to pass its barrier, and they wait for an event that only the
    event loop sets: if the tools ran one at a time, or on the loop, the barrier or the event would time out."""
    THREADS.clear()
    BARRIER.reset()
    BOTH_INSIDE.clear()
    LOOP_TICKED.clear()
    async with ModelPool(PoolConfig(cpu_workers=2)) as pool:
        calls = asyncio.gather(*(pool.call("derain.t_threads", image()) for _ in range(2)))
        while not BOTH_INSIDE.is_set() and not calls.done():  # the loop runs while both tools wait in their threads
            await asyncio.sleep(0.01)
        LOOP_TICKED.set()
        results = await calls
    assert len(results) == 2 and len(THREADS) == 2 and all(name.startswith("tool-cpu") for name in THREADS)


async def test_lru_residency_within_the_memory_budget():
    async with ModelPool(PoolConfig(memory_budget_mb=0.4)) as pool:
        await pool.call("dehaze.t_big1", image())
        await pool.call("dehaze.t_big2", image())
        stats = pool.stats()
        assert stats["resident_models"] == ["dehaze.t_big2"] and stats["model_evictions"] == 1
        await pool.call("dehaze.t_big1", image())
        assert pool.stats()["model_loads"] == 3
    async with ModelPool(PoolConfig(memory_budget_mb=0.1)) as pool:
        with pytest.raises(ToolExecutionError, match="over the pool's memory budget"):
            await pool.call("dehaze.t_big1", image())


async def test_bad_calls_get_clear_errors_and_do_not_disturb_in_flight_work():
    async with ModelPool(PoolConfig(cpu_workers=2)) as pool:
        in_flight = asyncio.create_task(pool.call("derain.t_slow", image()))
        with pytest.raises(ToolNotFoundError, match="unknown tool 'denoise.magic'"):
            await pool.call("denoise.magic", image())
        with pytest.raises(ParameterError, match="sigma"):
            await pool.call("denoise.nlm", image(), {"sigma": -5})
        with pytest.raises(ImageError, match=r"H x W x 3"):
            await pool.call("denoise.nlm", np.zeros((10, 10), np.float32))
        with pytest.raises(ImageError, match="float32"):
            await pool.call("denoise.nlm", np.zeros((10, 10, 3), np.uint8))
        assert (await in_flight).image.shape == (40, 40, 3)


def test_the_device_is_cuda_when_there_is_one_else_the_cpu(monkeypatch):
    from tiragent.server.pool import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="device 'cuda:1' requested but CUDA is not available"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1" and resolve_device("cpu") == "cpu"


class SplitNet(nn.Module):
    """A cpu_step model: the device estimates a gain, a CPU thread applies it (and may be held up by a test)."""

    hold = threading.Event()

    def device_step(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)).unsqueeze(1)

    def cpu_step(self, image: np.ndarray, estimate: np.ndarray) -> np.ndarray:
        assert threading.current_thread().name.startswith("tool-cpu"), "the CPU part must run on the CPU threads"
        if not SplitNet.hold.wait(timeout=20):
            raise RuntimeError("never released")
        return np.clip(image * 0.5 / max(float(estimate[0]), 1e-6), 0, 1)


async def test_a_models_cpu_step_does_not_hold_up_the_device():
    register_torch_tool(Task.DENOISE, "t_split", cost="low", descriptor=ModelDescriptor(tile_size=None, cpu_step=True), description="t")(SplitNet)
    register_torch_tool(Task.DENOISE, "t_quick", cost="low", descriptor=ModelDescriptor(), description="t")(Smooth)
    SplitNet.hold.clear()
    image = np.full((32, 32, 3), 0.25, np.float32)
    try:
        async with ModelPool(PoolConfig(cpu_workers=2)) as pool:
            split = asyncio.create_task(pool.call("denoise.t_split", image))
            while pool.stats()["tools"].get("denoise.t_split", {}).get("batches", 0) == 0:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # the split call is now in its CPU step, held
            quick = await asyncio.wait_for(pool.call("denoise.t_quick", image), 10)  # the device is free meanwhile
            assert not split.done()
            SplitNet.hold.set()
            result = await split
        np.testing.assert_allclose(result.image, 0.5, atol=1e-6)
        np.testing.assert_allclose(quick.image, 0.25, atol=1e-6)
    finally:
        SplitNet.hold.set()
        unregister("denoise.t_split")
        unregister("denoise.t_quick")


async def test_kernel_wiener_through_the_pool_matches_the_network(astronaut):
    from tiragent.server.registry import get_tool

    spec = get_tool("motion_deblur.kernel_wiener")
    assert spec.descriptor.cpu_step
    net = spec.build()
    with torch.no_grad():
        expected = net(torch.from_numpy(astronaut).permute(2, 0, 1)[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    async with ModelPool() as pool:
        result = await pool.call("motion_deblur.kernel_wiener", astronaut)
    np.testing.assert_allclose(result.image, expected, atol=1e-5)
