"""The local pool against the Ray Serve backend, under the same load, in one run on one machine.

Concurrent callers make calls of a learned tool (``denoise.unet`` at 256x256 by default: the
replicas run the server's own tools, so the benchmark uses a shipped one) through:
the local pool; Ray Serve with one ``LearnedTools`` replica; Ray Serve with two. A local Ray
cluster is started here (``ray.init()``). Also the per-call overhead Ray adds: one caller at a
time, on a 32x32 image, where the model's own time is small.

    python benchmarks/ray_pool.py [--calls 256] [--callers 64] [--size 256] [--replicas 1 2]

Needs ``pip install 'tir-agent[ray]'``. On a GPU machine, give the replicas a GPU share
(``--gpus-per-replica 0.5``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import drive, write_report

from tiragent.server.pool import ModelPool, PoolConfig
from tiragent.server.ray_pool import RayPool

TOOL = "denoise.unet"


async def overhead(pool, repeats: int = 40) -> float:
    """Median latency (ms) of one call at a time on a tiny image."""
    image = np.random.default_rng(1).random((32, 32, 3), dtype=np.float32)
    for _ in range(3):
        await pool.call(TOOL, image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await pool.call(TOOL, image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


async def measure(pool, images: list[np.ndarray], callers: int) -> dict[str, float]:
    await asyncio.gather(*(pool.call(TOOL, image) for image in images[:4]))  # warm: the model loaded, the replicas up
    result = await drive(lambda image: pool.call(TOOL, image), images, callers)
    result["tiny_call_ms"] = await overhead(pool)
    return result


async def main_async(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    import ray
    from ray import serve

    rng = np.random.default_rng(0)
    images = [rng.random((args.size, args.size, 3), dtype=np.float32) for _ in range(args.calls)]
    results = {}
    async with ModelPool(PoolConfig()) as local:
        results["local pool"] = await measure(local, images, args.callers)
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for replicas in args.replicas:
            with tempfile.TemporaryDirectory() as tmp:
                spec = Path(tmp) / "deployments.yaml"
                gpus = f", num_gpus: {args.gpus_per_replica}" if args.gpus_per_replica else ""
                spec.write_text(  # ClassicalTools is idle here: a token CPU share, so the LearnedTools replicas fit
                    f"deployments:\n  - name: LearnedTools\n    num_replicas: {replicas}\n    ray_actor_options: {{num_cpus: {args.cpus_per_replica}{gpus}}}\n"
                    "  - name: ClassicalTools\n    ray_actor_options: {num_cpus: 0.01}\n"
                )
                pool = await RayPool.start(PoolConfig(), deployments=spec)
                results[f"Ray Serve, {replicas} replica{'s' if replicas > 1 else ''}"] = await measure(pool, images, args.callers)
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=256)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus-per-replica", type=float, default=0.95, help="Ray CPUs per replica (under 1 so that two replicas and the idle ClassicalTools fit on 2 cores; torch gets max(1, int(this)) threads)")
    parser.add_argument("--gpus-per-replica", type=float, default=0.0)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    base = results["local pool"]
    lines = [
        f"{args.callers} concurrent callers, {args.calls} calls of `{TOOL}` at {args.size}x{args.size}; Ray replicas with "
        f"{args.cpus_per_replica:g} CPU each{f' and {args.gpus_per_replica:g} GPU' if args.gpus_per_replica else ''}. "
        "Tiny call: median latency of one call at a time on a 32x32 image.\n",
        "| backend | calls/s | vs local | p50 latency (ms) | p99 latency (ms) | tiny call (ms) | overhead vs local (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        lines.append(
            f"| {label} | {r['calls_per_s']:.1f} | {r['calls_per_s'] / base['calls_per_s']:.2f}x | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['tiny_call_ms']:.1f} | {r['tiny_call_ms'] - base['tiny_call_ms']:+.1f} |"
        )
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    print("written to", write_report("ray_pool", markdown, {"args": vars(args), "results": results}))


if __name__ == "__main__":
    main()
