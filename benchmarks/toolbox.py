"""Every tool, classical and learned, on its own degradation: PSNR/SSIM over clean images, and
milliseconds per 512x512 call; then, per task, the best learned tool against the best classical one.

For each tool, the degradation that its task undoes is applied with protocol parameters
sampled from a fixed seed per image; the tool runs through the model pool (as the server runs
it) with its default parameters, as an agent that knows only the task would. Super-resolution
is measured at x4 (the protocol) and at x2; a tool with a fixed scale only at its own.

    python benchmarks/toolbox.py [--data ../shared/data/clean/McMaster] [--images 18] [--name tools_mcmaster] [--device cuda] [--weights DIR]
                                 [--degradations protocol|randomized|independent] [--pairs DIR --tasks TASK] [--align PX]

``--degradations independent`` degrades with albumentations instead of this project's code
(``benchmarks/independent.py``; super-resolution at x4 only); ``randomized`` with the training
model of ``eval/randomized.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from common import ROOT, SHARED_DATA, write_report
from tqdm import tqdm

from tiragent.eval.degradations import degradation_for, degrade
from tiragent.eval.metrics import create_metric
from tiragent.images import list_images, read_image
from tiragent.server.nets import read_info
from tiragent.server.pool import ModelPool, PoolConfig
from tiragent.server.registry import ToolSpec, list_tools


def settings(spec: ToolSpec, source: str = "protocol") -> list[tuple[str, dict, dict]]:
    """(row label, degradation parameters, tool parameters) for each setting a tool is measured in."""
    if spec.task != "sr":
        return [(spec.key, {}, {})]
    scales = (4,) if source == "independent" else (4, 2)  # albumentations' downscale is made at x4
    if spec.descriptor is not None:
        return [(f"{spec.key} (x{spec.descriptor.scale})", {"scale": spec.descriptor.scale}, {})] if spec.descriptor.scale in scales else []
    return [(f"{spec.key} (x{s})", {"scale": s}, {"scale": s}) for s in scales]


def degraded_for(clean: np.ndarray, name: str, seed: int, degradation: dict, source: str) -> np.ndarray:
    if source == "independent":
        from independent import degrade_independent

        return degrade_independent(clean, name, seed)
    return degrade(clean, [name], seed=seed, params={name: degradation}, model=source)[0]


def aligned(image: np.ndarray, reference: np.ndarray, max_shift: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``reference`` cropped by ``max_shift`` on every side, ``image`` moved by the integer shift (within
    +-``max_shift`` pixels) that brings it closest to ``reference`` in mean squared error; unchanged at 0.

    Blind deblurring cannot know where the blur kernel's centre was: a kernel off its centre moves the whole image, and
    no single image says by how much. Deblurring benchmarks (Levin et al. 2009, Koehler et al. 2012) therefore score
    after aligning each result with its reference; so does this one, for the input and every tool alike, with ``--align``.
    """
    if max_shift <= 0:
        return image, reference
    m = max_shift
    h, w = reference.shape[:2]
    target = reference[m : h - m, m : w - m]
    shifts = [(dy, dx) for dy in range(-m, m + 1) for dx in range(-m, m + 1)]
    dy, dx = min(shifts, key=lambda s: float(np.mean((image[m + s[0] : h - m + s[0], m + s[1] : w - m + s[1]] - target) ** 2)))
    return image[m + dy : h - m + dy, m + dx : w - m + dx], target


async def seconds_per_call(pool: ModelPool, spec: ToolSpec, size: int, repeats: int, degradation: dict, params: dict) -> float:
    rng = np.random.default_rng(0)
    clean = cv2.GaussianBlur(rng.random((size * degradation.get("scale", 1),) * 2 + (3,), dtype=np.float32), (0, 0), 2.0)
    name = degradation_for(spec.task).name
    degraded, _ = degrade(clean, [name], seed=0, params={name: degradation})
    await pool.call(spec, degraded, params)  # warm-up (loads a model)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await pool.call(spec, degraded, params)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def measure(args: argparse.Namespace, cleans: list[np.ndarray], inputs: list[np.ndarray] | None = None) -> list[dict]:
    """``inputs``: real degraded images paired with ``cleans`` (instead of synthesis)."""
    psnr, ssim = create_metric("psnr"), create_metric("ssim")
    rows = []
    specs = [s for s in list_tools() if args.tasks is None or s.task in args.tasks.split(",")]
    async with ModelPool(PoolConfig(device=args.device)) as pool:
        for spec in tqdm(specs, desc="tools"):
            name = degradation_for(spec.task).name
            for label, degradation, params in settings(spec, args.degradations):
                before, after, before_ssim, after_ssim = [], [], [], []
                for i, clean in enumerate(cleans):
                    degraded = inputs[i] if inputs is not None else degraded_for(clean, name, args.seed * 1000 + i, degradation, args.degradations)
                    out = (await pool.call(spec, degraded, params)).image
                    baseline = cv2.resize(degraded, clean.shape[1::-1], interpolation=cv2.INTER_CUBIC) if spec.task == "sr" else degraded
                    baseline = np.clip(baseline, 0, 1)
                    for scored, (psnrs, ssims) in ((baseline, (before, before_ssim)), (out, (after, after_ssim))):
                        scored, reference = aligned(scored, clean, args.align)
                        psnrs.append(psnr(scored, reference))
                        ssims.append(ssim(scored, reference))
                repeats = 1 if spec.cost.value == "high" else 3
                rows.append(
                    {
                        "tool": label,
                        "task": spec.task.value + (f" x{degradation['scale']}" if "scale" in degradation else ""),
                        "learned": spec.is_torch,
                        "cost": spec.cost.value,
                        "seconds_512": await seconds_per_call(pool, spec, args.size // degradation.get("scale", 1), repeats, degradation, params),
                        "psnr_in": float(np.mean(before)),
                        "psnr_out": float(np.mean(after)),
                        "ssim_in": float(np.mean(before_ssim)),
                        "ssim_out": float(np.mean(after_ssim)),
                    }
                )
    return rows


def summary(rows: list[dict]) -> list[str]:
    lines = ["| task | best classical | PSNR | best learned | PSNR | margin (dB) | +1 dB target |", "|---|---|---:|---|---:|---:|---|"]
    for task in sorted({r["task"] for r in rows}):
        classical = [r for r in rows if r["task"] == task and not r["learned"]]
        learned = [r for r in rows if r["task"] == task and r["learned"]]
        if not classical or not learned:
            continue
        c, lrn = max(classical, key=lambda r: r["psnr_out"]), max(learned, key=lambda r: r["psnr_out"])
        margin = lrn["psnr_out"] - c["psnr_out"]
        lines.append(f"| {task} | {c['tool']} | {c['psnr_out']:.2f} | {lrn['tool']} | {lrn['psnr_out']:.2f} | {margin:+.2f} | {'met' if margin >= 1 else 'missed'} |")
    return lines


SOURCES = {
    "protocol": "this project's protocol synthesis (`eval/degradations.py`)",
    "randomized": "this project's randomized training model (`eval/randomized.py`)",
    "independent": "albumentations 2.x at the protocol's strengths, code this project did not write (`benchmarks/independent.py`)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "clean" / "McMaster"))
    parser.add_argument("--images", type=int, default=18)
    parser.add_argument("--size", type=int, default=512, help="side of the timing image (the output, for super-resolution)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", help="comma-separated tasks (default: all)")
    parser.add_argument("--device", default="cpu", help="where learned tools run (cpu, cuda)")
    parser.add_argument("--name", default="tools_mcmaster", help="report name under docs/benchmarks/")
    parser.add_argument("--degradations", default="protocol", choices=["protocol", "randomized", "independent"],
                        help="who makes the degradations: this project's protocol, its randomized training model, or albumentations")  # fmt: skip
    parser.add_argument("--pairs", type=Path, help="real pairs instead of synthesis: a folder with input/ and target/ (matched by sorted name); give --tasks")
    parser.add_argument("--weights", type=Path, help="a folder of retrained weights files that replace the shipped tools of the same name")
    parser.add_argument("--align", type=int, default=0, help="score the input and every output after the best integer shift within +-PX pixels "
                        "(as deblurring benchmarks do: a blind deblurrer cannot know a shifted kernel's offset); borders of PX cropped")  # fmt: skip
    args = parser.parse_args()
    if args.weights is not None:
        from tiragent.server.registry import get_tool
        from tiragent.server.tools.learned import register_weights

        found = sorted(args.weights.glob("*.safetensors"))
        if not found:
            parser.error(f"--weights {args.weights}: no .safetensors files there (paths are relative to {Path.cwd()})")
        for path in found:
            key = register_weights(path, get_tool(read_info(path).card["tool"]).cost, replace=True)
            print(f"{key}: weights {path}")
    inputs = None
    if args.pairs is not None:
        if not args.tasks:
            parser.error("--pairs needs --tasks (the task whose degradation the pairs carry)")
        cleans = [read_image(p) for p in list_images(args.pairs / "target")[: args.images]]
        inputs = [read_image(p) for p in list_images(args.pairs / "input")[: args.images]]
        made = f"real pairs of `{os.path.relpath(args.pairs, ROOT)}`"
    else:
        cleans = [read_image(p) for p in list_images(args.data)[: args.images]]
        cleans = [c[: c.shape[0] // 4 * 4, : c.shape[1] // 4 * 4] for c in cleans]
        made = f"`{os.path.relpath(args.data, ROOT)}` (the first by name), one degradation per image (seed {args.seed}), made by {SOURCES[args.degradations]}"
    rows = asyncio.run(measure(args, cleans, inputs))
    weights = f"; learned tools with the weights in `{os.path.relpath(args.weights, ROOT)}` where it has them" if args.weights else ""
    lines = [
        f"{len(cleans)} images: {made}{weights}; "
        f"tools at their default parameters, run through the model pool on `{args.device}`. Learned tools are marked *(learned)*. "
        f"For super-resolution the input column is bicubic upscaling. "
        + (f"Every score after the integer shift within +-{args.align} px that best aligns it with its reference (borders of {args.align} px cropped). " if args.align else "")
        + f"Timing: median of 3 calls producing a {args.size}x{args.size} image (1 call for high-cost tools).\n",
        "| tool | cost | ms / 512x512 | PSNR in | PSNR out | gain (dB) | SSIM in | SSIM out |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tool']}{' *(learned)*' if r['learned'] else ''} | {r['cost']} | {1000 * r['seconds_512']:.0f} | {r['psnr_in']:.2f} | {r['psnr_out']:.2f} | "
            f"{r['psnr_out'] - r['psnr_in']:+.2f} | {r['ssim_in']:.3f} | {r['ssim_out']:.3f} |"
        )
    lines += ["", "Per task, the best learned tool against the best classical tool (PSNR out):", "", *summary(rows)]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    print("written to", write_report(args.name, markdown, {"args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
