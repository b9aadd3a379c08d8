"""Throughput and latency of the shared model pool against a naive one-call-at-a-time executor.

64 concurrent callers make 256 calls in total on a batchable torch tool (a small
residual CNN) at 256x256. The naive executor runs each call on its own, in arrival order,
off the event loop; the pool batches same-shape inputs. Both use the same module.

Every measurement runs in a fresh process, the rows interleaved. In one process, torch
code issued from a second thread runs about 30% slower than from the first (each thread
gets its own OpenMP team, and an idle team's threads spin on the same two cores), which
made whichever executor ran second look slow.

    python benchmarks/pool_throughput.py [--calls 256] [--callers 64] [--size 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from common import drive, write_report
from torch import nn

from tiragent.server.pool import ModelPool, PoolConfig
from tiragent.server.registry import ModelDescriptor, register_torch_tool
from tiragent.tasks import Task


class ResidualCNN(nn.Module):
    """DnCNN-style: 5 conv layers of 16 channels predicting a residual (about 9 k parameters)."""

    def __init__(self, channels: int = 16, depth: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(channels, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


def build() -> nn.Module:
    torch.manual_seed(0)
    return ResidualCNN()


register_torch_tool(Task.DENOISE, "bench_cnn", cost="low", descriptor=ModelDescriptor(multiple_of=8, tile_size=512), description="benchmark CNN")(build)


class NaiveExecutor:
    """One call at a time: each call is a batch-of-one forward on one dedicated worker thread (like the pool's device thread)."""

    def __init__(self, channels_last: bool) -> None:
        self.device = "cuda" if torch.cuda.is_available() else "cpu"  # the device the pool picks
        self.channels_last = channels_last
        self.lock = asyncio.Lock()
        self.thread = ThreadPoolExecutor(max_workers=1)
        # Built on its own thread, as the pool builds its models on the device thread: torch work from a second
        # thread of a process runs slower (another OpenMP team), so either side building elsewhere would skew the race.
        self.model = self.thread.submit(lambda: build().eval().to(self.device)).result()

    def _forward(self, image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            if self.channels_last:  # exactly the pool's conversion, for a batch of one
                x = torch.from_numpy(np.stack([image])).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
            else:
                x = torch.from_numpy(image).permute(2, 0, 1)[None]
            return self.model(x.to(self.device)).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()

    async def call(self, image: np.ndarray) -> np.ndarray:
        async with self.lock:
            return await asyncio.get_running_loop().run_in_executor(self.thread, self._forward, image)


NAIVE_SETTINGS = (("naive, as usually written (NCHW)", False), ("naive, channels-last like the pool", True))


async def measure(args: argparse.Namespace, row: str) -> dict[str, float]:
    """One run of one executor (in this process, which should be fresh)."""
    rng = np.random.default_rng(0)
    images = [rng.random((args.size, args.size, 3), dtype=np.float32) for _ in range(args.calls)]
    warm = images[:4]
    naive = dict(NAIVE_SETTINGS)
    if row in naive:
        executor = NaiveExecutor(naive[row])
        for image in warm:
            await executor.call(image)
        return await drive(executor.call, images, args.callers)
    cap = dict(POOL_SETTINGS)[row]
    async with ModelPool(PoolConfig(max_batch_size=cap, batch_wait_ms=5)) as pool:
        await asyncio.gather(*(pool.call("denoise.bench_cnn", image) for image in warm))
        before = pool.stats()["tools"]["denoise.bench_cnn"]["batches"]
        result = await drive(lambda image: pool.call("denoise.bench_cnn", image), images, args.callers)
        result["mean_batch_size"] = args.calls / max(1, pool.stats()["tools"]["denoise.bench_cnn"]["batches"] - before)
    return result


def run(args: argparse.Namespace) -> dict:
    """Every row runs ``repeats`` times, interleaved, each in a fresh process; a row reports its median run."""
    rows = [label for label, _ in NAIVE_SETTINGS] + [label for label, _ in POOL_SETTINGS]
    runs: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.repeats):
        for i, label in enumerate(rows):
            command = [sys.executable, __file__, "--row", str(i), "--calls", str(args.calls), "--callers", str(args.callers), "--size", str(args.size)]
            out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
            runs.setdefault(label, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = {}
    for label, rs in runs.items():
        ordered = sorted(rs, key=lambda r: r["calls_per_s"])
        results[label] = {**ordered[len(rs) // 2], "min_calls_per_s": ordered[0]["calls_per_s"], "max_calls_per_s": ordered[-1]["calls_per_s"]}
    return results


POOL_SETTINGS = (
    ("pool, default (batch 1 on a CPU, the model's own on a GPU)", None),
    ("pool, batch <= 2", 2),
    ("pool, batch <= 8", 8),
    ("pool, batch <= 16", 16),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=256)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--row", type=int, help=argparse.SUPPRESS)  # internal: measure one row in this process
    args = parser.parse_args()
    if args.row is not None:
        rows = [label for label, _ in NAIVE_SETTINGS] + [label for label, _ in POOL_SETTINGS]
        print(json.dumps(asyncio.run(measure(args, rows[args.row]))))
        return
    results = run(args)
    base = results["naive, channels-last like the pool"]["calls_per_s"]
    lines = [
        f"{args.callers} concurrent callers, {args.calls} calls, {args.size}x{args.size} RGB, ResidualCNN (5 x 16-channel 3x3 convs), float32; "
        f"median of {args.repeats} interleaved runs per row, each in a fresh process.\n",
        "| executor | calls/s | range over runs | vs naive channels-last | p50 latency (ms) | p99 latency (ms) | mean batch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        batch = f"{r['mean_batch_size']:.1f}" if "mean_batch_size" in r else "1"
        spread = f"{r['min_calls_per_s']:.0f}-{r['max_calls_per_s']:.0f}"
        lines.append(f"| {label} | {r['calls_per_s']:.1f} | {spread} | {r['calls_per_s'] / base:.2f}x | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {batch} |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    print("written to", write_report("pool_throughput", markdown, {"args": vars(args), "results": results}))


if __name__ == "__main__":
    main()
