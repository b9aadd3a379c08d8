"""Does a slow tool hold up the shared device? Latency of `denoise.unet` calls alone and while
`motion_deblur.kernel_wiener` calls (a small network, then about 0.5 s of numpy deconvolution) are in flight.

Both are the shipped learned tools, through one model pool, on 512x512 crops of the bundled
example. One caller makes `denoise.unet` calls one after another; in the loaded run, other
callers keep `--wiener-callers` kernel_wiener calls in flight the whole time.

    python benchmarks/device_sharing.py [--calls 20] [--wiener-callers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from common import write_report

from tiragent.images import read_image
from tiragent.server.pool import ModelPool, PoolConfig


def photo(size: int) -> np.ndarray:
    image = read_image(Path(str(resources.files("tiragent") / "examples" / "astronaut_clean.png")))
    return np.ascontiguousarray(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))


async def unet_latencies(pool: ModelPool, image: np.ndarray, calls: int) -> dict[str, list[float]]:
    """Per call: the whole latency, the wait for the device (queue), and the run once on it."""
    out: dict[str, list[float]] = {"latency": [], "queue": [], "run": []}
    for _ in range(calls):
        start = time.perf_counter()
        result = await pool.call("denoise.unet", image)
        out["latency"].append(time.perf_counter() - start)
        out["queue"].append(result.queue_wait_s)
        out["run"].append(result.run_s)
    return out


async def run(args: argparse.Namespace) -> dict:
    image = photo(args.size)
    async with ModelPool(PoolConfig(device="cpu")) as pool:
        await pool.call("denoise.unet", image)  # load both models first
        await pool.call("motion_deblur.kernel_wiener", image)
        alone = await unet_latencies(pool, image, args.calls)
        stop = asyncio.Event()
        wiener_done = 0

        async def keep_busy() -> None:
            nonlocal wiener_done
            while not stop.is_set():
                await pool.call("motion_deblur.kernel_wiener", image)
                wiener_done += 1

        busy = [asyncio.create_task(keep_busy()) for _ in range(args.wiener_callers)]
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        loaded = await unet_latencies(pool, image, args.calls)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*busy)
        wiener = pool.stats()["tools"]["motion_deblur.kernel_wiener"]
    def summary(xs: dict[str, list[float]]) -> dict[str, float]:
        return {"p50_ms": 1000 * statistics.median(xs["latency"]), "max_ms": 1000 * max(xs["latency"]),
                "queue_p50_ms": 1000 * statistics.median(xs["queue"]), "run_p50_ms": 1000 * statistics.median(xs["run"])}  # fmt: skip

    return {
        "alone": summary(alone),
        "with_wiener": summary(loaded),
        "wiener_calls_per_s": wiener_done / elapsed,
        "wiener_p50_ms": wiener["p50_latency_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--wiener-callers", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--name", default="device_sharing")
    args = parser.parse_args()
    r = asyncio.run(run(args))
    markdown = (
        f"`denoise.unet` latency at {args.size}x{args.size} on the CPU device, {args.calls} calls one after another, "
        f"alone and with {args.wiener_callers} `motion_deblur.kernel_wiener` calls kept in flight.\n\n"
        "| denoise.unet | p50 latency (ms) | max (ms) | p50 wait for the device (ms) | p50 run (ms) |\n|---|---:|---:|---:|---:|\n"
        + "".join(
            f"| {label} | {r[key]['p50_ms']:.0f} | {r[key]['max_ms']:.0f} | {r[key]['queue_p50_ms']:.0f} | {r[key]['run_p50_ms']:.0f} |\n"
            for label, key in (("alone", "alone"), ("with kernel_wiener in flight", "with_wiener"))
        )
        + "\n"
        f"kernel_wiener meanwhile: {r['wiener_calls_per_s']:.2f} calls/s, p50 {r['wiener_p50_ms']:.0f} ms.\n"
    )
    print(markdown)
    print("written to", write_report(args.name, markdown, {"args": vars(args), "results": r}))


if __name__ == "__main__":
    main()
