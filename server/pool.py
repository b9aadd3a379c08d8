"""The process-wide model-call pool through which every tool call runs.

- Classical tools run on a bounded thread pool, off the event loop.
- Learned (``nn.Module``) tools get one batching queue per tool; same-shape inputs with
  the same parameters run as one batch, large inputs are cut into equal tiles that batch
  together. Batches run on one device thread, so the accelerator sees one batch at a time.
- Model weights stay resident least-recently-used within a memory budget; without a GPU
  everything runs on the CPU.
- Every call has a timeout and can be cancelled; a failing input fails alone.
- Counters per tool: calls, errors, batch sizes, queue wait, run time.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter, OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tiragent.errors import ImageError, ServerBusyError, TirAgentError, ToolExecutionError, ToolTimeoutError
from tiragent.server.allocator import retain_freed_memory
from tiragent.server.batching import BatchQueue
from tiragent.server.registry import ToolParams, ToolSpec, get_tool
from tiragent.server.tiling import Tile, pad_to, stitch, tile_grid
from tiragent.server.workers import ProcessWorkers

DISCOURAGED_TILE = 2048
"""Tile side for models whose tiling is discouraged (they rely on global context): only larger inputs are tiled."""


@dataclass
class PoolConfig:
    """How the pool runs tools. Every field has a default that suits one machine."""

    device: str = field(default="auto", metadata={"help": "Where learned tools run: 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N'."})
    memory_budget_mb: float | None = field(
        default=None, metadata={"help": "Memory for resident model weights; default: 0.8 of the GPU memory, or 2048 MB on the CPU."}
    )
    cpu_workers: int = field(default_factory=lambda: os.cpu_count() or 2, metadata={"help": "Classical tool calls that run at once."})
    process_workers: int = field(
        default=2, metadata={"help": "Worker processes for isolated tools (native code that may crash, e.g. bm3d); started on first use."}
    )
    max_batch_size: int | None = field(
        default=None, metadata={"help": "Cap on batch size; default: each model's own on a GPU, 1 on the CPU (measured: batches are slower per image on CPUs, see docs/benchmarks/pool_throughput.md)."}
    )
    batch_wait_ms: float = field(default=5.0, metadata={"help": "How long a batch waits for more inputs after its first."})
    concurrent_batches: int = field(
        default=2, metadata={"help": "Batches of one model handed to the device at once: with 2, the next is ready when one ends (no idle device between batches)."}
    )
    timeout_s: float = field(
        default=300.0,
        metadata={"help": "Default per-call time limit in seconds. A timed-out classical tool's thread finishes its work, but its result is dropped; an isolated tool's worker process is killed."},
    )
    half_precision: bool = field(default=True, metadata={"help": "Run models that support it in bf16/fp16 on a GPU."})
    max_in_flight: int = field(
        default=512, metadata={"help": "Tool calls in flight at most, all tools together; past it a call fails at once with a 'server busy, retry' error."}
    )
    retain_freed_mb: int = field(
        default=256,
        metadata={"help": "Freed memory the C allocator keeps for the next call instead of returning it to the OS (glibc only; 0: its defaults). Returning it makes each model call page-fault its activations afresh: 0.65x against 1.05x a plain loop on a 2-core CPU (docs/benchmarks/pool_throughput.md)."},
    )
    max_queue: int = field(
        default=256,
        metadata={"help": "Calls waiting for one tool at most (for a model's batch, or for a thread or worker process); past it a call fails at once with a 'server busy' error. Size it so that waiting calls finish within the timeout."},
    )


@dataclass
class CallResult:
    image: np.ndarray
    tool: str
    params: dict[str, Any]
    queue_wait_s: float
    run_s: float
    batch_size: int


@dataclass
class ToolStats:
    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    cancelled: int = 0
    busy: int = 0
    in_flight: int = 0
    batches: int = 0
    batch_items: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    queue_wait_s: float = 0.0
    run_s: float = 0.0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    def record_batch(self, size: int) -> None:
        self.batches += 1
        self.batch_items += size
        self.batch_sizes[size] += 1

    def snapshot(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0  # noqa: E731
        done = max(1, self.calls)
        return {
            "calls": self.calls,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "cancelled": self.cancelled,
            "busy": self.busy,
            "batches": self.batches,
            "mean_batch_size": self.batch_items / self.batches if self.batches else 0.0,
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "mean_queue_wait_ms": 1000 * self.queue_wait_s / done,
            "mean_run_ms": 1000 * self.run_s / done,
            "p50_latency_ms": 1000 * pct(0.5),
            "p99_latency_ms": 1000 * pct(0.99),
        }


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return name


class ModelCache:
    """Least-recently-used residency of models on one device, within a byte budget.

    Only the device thread touches it, so it needs no lock.
    """

    def __init__(self, device: str, budget_bytes: int, half: bool) -> None:
        self.device = device
        self.budget_bytes = budget_bytes
        self.half = half
        self._models: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.loads = 0
        self.evictions = 0

    @property
    def used_bytes(self) -> int:
        return sum(size for _, size in self._models.values())

    def resident(self) -> list[str]:
        return list(self._models)

    def dtype_for(self, spec: ToolSpec) -> Any:
        """The half-precision type a model runs in here, or None for float32: bf16 where both the GPU and
        the model support it, else fp16 where the model supports that; never a type the model did not declare."""
        import torch

        d = spec.descriptor
        if not (self.half and self.device.startswith("cuda") and d is not None):
            return None
        if d.supports_bfloat16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if d.supports_half else None

    def get(self, spec: ToolSpec) -> Any:
        import torch

        if spec.key in self._models:
            self._models.move_to_end(spec.key)
            return self._models[spec.key][0]
        module = spec.build()  # type: ignore[misc]
        size = sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
            b.numel() * b.element_size() for b in module.buffers()
        )
        if size > self.budget_bytes:
            raise ToolExecutionError(
                f"{spec.key}: model needs {size / 2**20:.1f} MB, over the pool's memory budget of {self.budget_bytes / 2**20:.1f} MB"
            )
        while self._models and self.used_bytes + size > self.budget_bytes:
            self._models.popitem(last=False)
            self.evictions += 1
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        module = module.eval().to(self.device)
        dtype = self.dtype_for(spec)
        if dtype is not None:
            module = module.to(dtype)
        self._models[spec.key] = (module, size)
        self.loads += 1
        return module


@dataclass
class CpuStep:
    """What the device returns for a ``cpu_step`` model: the estimate of one image and the CPU function that finishes it."""

    estimate: np.ndarray
    step: Any

    def finish(self, image: np.ndarray) -> np.ndarray:
        return self.step(image, self.estimate)


@dataclass
class _Piece:
    """One model input: a whole (padded) image or one tile of it."""

    array: np.ndarray
    params: ToolParams
    started: float = 0.0  # when the device began its batch
    batch_size: int = 0

    @property
    def group(self) -> tuple[tuple[int, ...], ToolParams]:
        return self.array.shape, self.params  # parameter models are frozen, so hashable and comparable


class ModelPool:
    """Runs every tool call of the process. Use one per process, inside a running event loop."""

    def __init__(self, config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        self.device = resolve_device(self.config.device)
        self.retains_freed_memory = retain_freed_memory(self.config.retain_freed_mb)
        self._cpu = ThreadPoolExecutor(max_workers=self.config.cpu_workers, thread_name_prefix="tool-cpu")
        self._device = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tool-device")
        budget = self.config.memory_budget_mb
        if budget is None:
            budget = self._default_budget_mb()
        self.cache = ModelCache(self.device, int(budget * 2**20), self.config.half_precision)
        self._queues: dict[str, BatchQueue[_Piece, np.ndarray]] = {}
        self._stats: dict[str, ToolStats] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}
        self.workers = ProcessWorkers(self.config.process_workers)
        self.in_flight = 0

    def _default_budget_mb(self) -> float:
        if self.device.startswith("cuda"):
            import torch

            return 0.8 * torch.cuda.get_device_properties(torch.device(self.device)).total_memory / 2**20
        return 2048.0

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters: per tool, and for the pool."""
        return {
            "device": self.device,
            "in_flight": self.in_flight,
            "limits": {"max_in_flight": self.config.max_in_flight, "max_queue": self.config.max_queue},
            "resident_models": self.cache.resident(),
            "resident_mb": self.cache.used_bytes / 2**20,
            "model_loads": self.cache.loads,
            "model_evictions": self.cache.evictions,
            "process_workers": self.workers.stats(),
            "tools": {key: s.snapshot() for key, s in sorted(self._stats.items())},
        }

    def _admit(self, spec: ToolSpec, stats: ToolStats) -> None:
        """Backpressure: past the limits, fail at once with a retry-after hint (the tool's recent median latency)."""
        if spec.is_torch:
            waiting = self._queues[spec.key].qsize() if spec.key in self._queues else 0
        else:  # calls of a classical tool beyond what can run at once wait for a thread or a worker process
            capacity = min(spec.concurrency or self.config.cpu_workers, self.config.process_workers if spec.isolated else self.config.cpu_workers)
            waiting = max(0, stats.in_flight - capacity)
        if self.in_flight < self.config.max_in_flight and waiting < self.config.max_queue:
            return
        stats.busy += 1
        recent = sorted(stats.latencies)[len(stats.latencies) // 2] if stats.latencies else 0.5
        retry = round(min(30.0, max(0.1, recent)), 2)
        what = (f"{self.in_flight} calls in flight (limit {self.config.max_in_flight})" if self.in_flight >= self.config.max_in_flight
                else f"{waiting} calls waiting for {spec.key} (limit {self.config.max_queue})")  # fmt: skip
        raise ServerBusyError(f"server busy: {what}; retry in about {retry} s", retry)

    def _tool_stats(self, key: str) -> ToolStats:
        if key not in self._stats:
            self._stats[key] = ToolStats()
        return self._stats[key]

    async def call(
        self,
        tool: str | ToolSpec,
        image: np.ndarray,
        params: dict[str, Any] | ToolParams | None = None,
        *,
        timeout: float | None = None,
    ) -> CallResult:
        """Run one tool on one image. Raises a ``TirAgentError`` that names the problem."""
        spec = tool if isinstance(tool, ToolSpec) else get_tool(tool)
        checked = spec.validate(params)
        _check_array(image)
        stats = self._tool_stats(spec.key)
        self._admit(spec, stats)
        stats.calls += 1
        stats.in_flight += 1
        self.in_flight += 1
        started = time.perf_counter()
        limit = self.config.timeout_s if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                if spec.is_torch:
                    out, wait, batch_size = await self._run_model(spec, image, checked)
                else:
                    out, wait, batch_size = await self._run_cpu(spec, image, checked)
        except TimeoutError:
            stats.timeouts += 1
            raise ToolTimeoutError(f"{spec.key} did not finish within {limit:g} s") from None
        except asyncio.CancelledError:
            stats.cancelled += 1
            raise
        except TirAgentError:
            stats.errors += 1
            raise
        except Exception as err:
            stats.errors += 1
            raise ToolExecutionError(f"{spec.key} failed: {type(err).__name__}: {err}") from err
        finally:
            self.in_flight -= 1
            stats.in_flight -= 1
        elapsed = time.perf_counter() - started
        stats.latencies.append(elapsed)
        stats.queue_wait_s += wait
        stats.run_s += elapsed - wait
        return CallResult(out, spec.key, checked.model_dump(), wait, elapsed - wait, batch_size)

    async def _run_cpu(self, spec: ToolSpec, image: np.ndarray, params: ToolParams) -> tuple[np.ndarray, float, int]:
        submitted = time.perf_counter()
        if spec.concurrency is None:
            return await self._run_cpu_now(spec, image, params, submitted)
        if spec.key not in self._limits:
            self._limits[spec.key] = asyncio.Semaphore(spec.concurrency)
        async with self._limits[spec.key]:  # the tool's own limit: native code that is not thread-safe
            return await self._run_cpu_now(spec, image, params, submitted)

    async def _run_cpu_now(self, spec: ToolSpec, image: np.ndarray, params: ToolParams, submitted: float) -> tuple[np.ndarray, float, int]:
        if spec.isolated:
            began = time.perf_counter()
            out = await self.workers.run(spec.key, spec.run, image, params)  # type: ignore[arg-type]
            self._tool_stats(spec.key).record_batch(1)
            return _check_output(spec, out), began - submitted, 1
        began_at: list[float] = []

        def work() -> np.ndarray:
            began_at.append(time.perf_counter())
            return _check_output(spec, spec.run(image, params))  # type: ignore[misc]

        out = await asyncio.get_running_loop().run_in_executor(self._cpu, work)
        self._tool_stats(spec.key).record_batch(1)
        return out, began_at[0] - submitted, 1

    def _queue(self, spec: ToolSpec) -> BatchQueue[_Piece, np.ndarray]:
        if spec.key not in self._queues:
            assert spec.descriptor is not None
            cap = self.config.max_batch_size or (spec.descriptor.max_batch_size if self.device != "cpu" else 1)
            stats = self._tool_stats(spec.key)

            async def handler(pieces: list[_Piece]) -> list[np.ndarray | BaseException]:
                stats.record_batch(len(pieces))
                return await asyncio.get_running_loop().run_in_executor(self._device, self._forward_groups, spec, pieces)

            self._queues[spec.key] = BatchQueue(
                handler,
                max_batch_size=max(1, min(cap, spec.descriptor.max_batch_size)),
                batch_wait_timeout_s=self.config.batch_wait_ms / 1000,
                max_concurrent_batches=self.config.concurrent_batches,
            )
        return self._queues[spec.key]

    async def _run_model(self, spec: ToolSpec, image: np.ndarray, params: ToolParams) -> tuple[np.ndarray, float, int]:
        d = spec.descriptor
        assert d is not None
        h, w = image.shape[:2]
        queue = self._queue(spec)
        submitted = time.perf_counter()
        tile_size = DISCOURAGED_TILE if d.tiling == "discouraged" and d.tile_size is not None else d.tile_size
        if tile_size is not None and max(h, w) > tile_size:
            tiles = tile_grid(h, w, tile_size, d.tile_overlap)
            ph, pw = d.padded(tiles[0].height, tiles[0].width)
            crops = [pad_to(image[t.top : t.top + t.height, t.left : t.left + t.width], ph, pw) for t in tiles]
        else:
            tiles = [Tile(0, 0, h, w)]
            ph, pw = d.padded(h, w)
            crops = [pad_to(image, ph, pw)]
        pieces = [_Piece(c, params) for c in crops]
        if len(pieces) == 1:  # the common case: no task per piece
            results = [await queue.submit(pieces[0])]
        else:
            results = await asyncio.gather(*(queue.submit(p) for p in pieces))
        wait = max(p.started for p in pieces) - submitted
        if d.cpu_step:  # the numpy part runs on the CPU threads, off the shared device
            loop = asyncio.get_running_loop()
            results = await asyncio.gather(*(loop.run_in_executor(self._cpu, r.finish, p.array) for r, p in zip(results, pieces)))
            results = [_check_output(spec, r) for r in results]
        outputs = [r[: t.height * d.scale, : t.width * d.scale] for r, t in zip(results, tiles)]
        if len(tiles) == 1:
            out = np.ascontiguousarray(outputs[0])
        else:  # blending is heavy numpy work: keep it off the event loop
            out = await asyncio.get_running_loop().run_in_executor(self._cpu, stitch, tiles, outputs, h, w, d.scale, d.tile_overlap)
        if out.ndim != 3 or out.shape[2] != 3:
            raise ToolExecutionError(f"{spec.key} returned {out.shape}, not an H x W x 3 image")
        return out, wait, max(p.batch_size for p in pieces)

    def _forward_groups(self, spec: ToolSpec, pieces: list[_Piece]) -> list[np.ndarray | BaseException]:
        """Run on the device thread: one forward per (shape, params) group; a failing group is retried item by item."""
        now = time.perf_counter()  # the queue wait ends when the device takes the batch, not when it is formed
        for piece in pieces:
            piece.started, piece.batch_size = now, len(pieces)
        results: list[np.ndarray | BaseException] = [RuntimeError("not run")] * len(pieces)
        groups: dict[Any, list[int]] = {}
        for i, piece in enumerate(pieces):
            groups.setdefault(piece.group, []).append(i)
        for indices in groups.values():
            try:
                outs = self._forward(spec, [pieces[i] for i in indices])
                for i, out in zip(indices, outs):
                    results[i] = out
            except Exception as err:  # noqa: BLE001
                if len(indices) == 1:
                    results[indices[0]] = ToolExecutionError(f"{spec.key} failed: {type(err).__name__}: {err}")
                    continue
                for i in indices:
                    try:
                        results[i] = self._forward(spec, [pieces[i]])[0]
                    except Exception as single:  # noqa: BLE001
                        results[i] = ToolExecutionError(f"{spec.key} failed: {type(single).__name__}: {single}")
        return results

    def _forward(self, spec: ToolSpec, pieces: list[_Piece]) -> list[np.ndarray]:
        import torch

        module = self.cache.get(spec)
        dtype = next(module.parameters(), torch.empty(0)).dtype
        # A copy, also of one piece: stored images are read-only, and a model may work in place on its input (made by
        # numpy, so that torch never wraps a read-only array).
        batch = torch.from_numpy(np.stack([p.array for p in pieces])).permute(0, 3, 1, 2)
        batch = batch.to(self.cache.device, dtype=dtype if dtype.is_floating_point else torch.float32)
        # Channels-last is what the HWC arrays already are, and convolutions run about 2x faster in it on CPUs.
        batch = batch.contiguous(memory_format=torch.channels_last)
        kwargs = pieces[0].params.model_dump()
        with torch.inference_mode():
            if spec.descriptor is not None and spec.descriptor.cpu_step:
                estimate = module.device_step(batch, **kwargs)
                if not bool(torch.isfinite(estimate).all()):
                    raise ToolExecutionError(f"{spec.key} estimated NaN or infinite values")
                return [CpuStep(row, module.cpu_step) for row in estimate.float().cpu().numpy()]
            out = module(batch, **kwargs) if kwargs else module(batch)
            if out.ndim != 4 or out.shape[1] != 3:
                raise ToolExecutionError(f"{spec.key} returned a tensor of shape {tuple(out.shape)}, not N x 3 x H x W")
            low, high = torch.aminmax(out)  # one pass; NaN or infinity shows in one of them
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ToolExecutionError(f"{spec.key} produced NaN or infinite pixels")
            out = out.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        return list(out)

    async def aclose(self) -> None:
        for queue in self._queues.values():
            await queue.aclose()
        self._queues.clear()
        self._cpu.shutdown(wait=False, cancel_futures=True)
        self._device.shutdown(wait=False, cancel_futures=True)
        self.workers.close()

    async def __aenter__(self) -> ModelPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _check_array(image: Any) -> None:
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy image array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    if image.dtype != np.float32:
        raise ImageError(f"expected float32 pixels in [0, 1], got {image.dtype}")


def _check_output(spec: ToolSpec, out: Any) -> np.ndarray:
    if not isinstance(out, np.ndarray) or out.ndim != 3 or out.shape[2] != 3:
        raise ToolExecutionError(f"{spec.key} returned {getattr(out, 'shape', type(out).__name__)}, not an H x W x 3 image")
    if not np.isfinite(out).all():
        raise ToolExecutionError(f"{spec.key} produced NaN or infinite pixels")
    return np.ascontiguousarray(np.clip(out, 0, 1), dtype=np.float32)
