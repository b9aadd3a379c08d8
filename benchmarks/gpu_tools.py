"""Learned tools on a GPU, through the model pool as the server runs them.

Per tool, in fp32 and in half precision (bf16 where the GPU has it): milliseconds per
512x512 call (the output, for super-resolution), images per second when 32 callers call at
once (the pool batches them), and PSNR on the tool's own degradation over clean images, so
that what half precision costs in quality shows next to what it saves in time.

    python benchmarks/gpu_tools.py [--weights DIR] [--data ../shared/data/clean/McMaster] [--images 18]

``--weights DIR`` registers the weights files in DIR over the shipped tools of the same name.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, SHARED_DATA, write_report

from tiragent.eval.degradations import degradation_for, degrade
from tiragent.images import list_images, read_image
from tiragent.server.pool import ModelPool, PoolConfig
from tiragent.server.registry import Cost, ToolSpec, list_tools
from tiragent.server.tools.learned import register_weights
from tiragent.train.tool_trainer import psnr


def degradation_params(spec: ToolSpec) -> dict:
    return {"scale": spec.descriptor.scale} if spec.task == "sr" and spec.descriptor is not None else {}


async def measure_tool(spec: ToolSpec, half: bool, cleans: list[np.ndarray], size: int, callers: int, device: str) -> dict:
    name, params = degradation_for(spec.task).name, degradation_params(spec)
    scale = params.get("scale", 1)
    async with ModelPool(PoolConfig(device=device, half_precision=half)) as pool:
        scores = []
        for i, clean in enumerate(cleans):
            clean = clean[: clean.shape[0] // scale * scale, : clean.shape[1] // scale * scale]
            degraded, _ = degrade(clean, [name], seed=i, params={name: params})
            scores.append(psnr((await pool.call(spec, degraded)).image, clean))
        rng = np.random.default_rng(0)
        image = rng.random((size // scale, size // scale, 3), dtype=np.float32)
        await pool.call(spec, image)  # warm-up
        times = []
        for _ in range(10):
            start = time.perf_counter()
            await pool.call(spec, image)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        results = await asyncio.gather(*(pool.call(spec, image) for _ in range(callers)))
        burst = time.perf_counter() - start
    return {
        "ms_512": 1000 * statistics.median(times),
        "images_per_s": callers / burst,
        "mean_batch": float(np.mean([r.batch_size for r in results])),
        "psnr": float(np.mean(scores)),
    }


async def measure(specs: list[ToolSpec], cleans: list[np.ndarray], size: int, callers: int, device: str) -> list[dict]:
    rows = []
    for spec in specs:
        fp32 = await measure_tool(spec, False, cleans, size, callers, device)
        half = await measure_tool(spec, True, cleans, size, callers, device)
        rows.append({"tool": spec.key, "supports_half": spec.descriptor.supports_half, "fp32": fp32, "half": half})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="folder of weights files to register over the shipped tools")
    parser.add_argument("--data", default=str(SHARED_DATA / "clean" / "McMaster"))
    parser.add_argument("--images", type=int, default=18)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--name", default="tools_gpu")
    parser.add_argument("--device", default="cuda", help="cuda (what it is for), or cpu to try the script")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu_tools.py measures GPU runs, and torch sees no CUDA device")
    replaced = [register_weights(p, Cost.MEDIUM, replace=True) for p in sorted(args.weights.glob("*.safetensors"))] if args.weights else []
    specs = [s for s in list_tools() if s.is_torch]
    cleans = [read_image(p) for p in list_images(args.data)[: args.images]]
    rows = asyncio.run(measure(specs, cleans, args.size, args.callers, args.device))
    lines = [
        f"{len(rows)} learned tools through the model pool on `{args.device}`; PSNR over {len(cleans)} images of `{os.path.relpath(args.data, ROOT)}`, "
        f"each with one protocol-sampled degradation of the tool's task (seed = image index). Latency: median of 10 single calls producing a "
        f"{args.size}x{args.size} image; throughput: {args.callers} calls at once. Half precision: "
        f"{'bf16' if args.device.startswith('cuda') and torch.cuda.is_bf16_supported() else 'fp16 (none on the CPU: both columns fp32)'}, for the tools whose descriptor allows it (the others run fp32 in both columns)."
        + (f" Weights of {', '.join(replaced)} from `{args.weights}`." if replaced else "")
        + "\n",
        "| tool | half | ms fp32 | ms half | images/s fp32 | images/s half | mean batch | PSNR fp32 | PSNR half |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        f, h = r["fp32"], r["half"]
        lines.append(
            f"| {r['tool']} | {'yes' if r['supports_half'] else 'no'} | {f['ms_512']:.1f} | {h['ms_512']:.1f} | {f['images_per_s']:.0f} | {h['images_per_s']:.0f} | "
            f"{h['mean_batch']:.1f} | {f['psnr']:.2f} | {h['psnr']:.2f} |"
        )
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    print("written to", write_report(args.name, markdown, {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}))


if __name__ == "__main__":
    main()
