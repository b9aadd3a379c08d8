"""Every tool on its own degradation: seconds per 512x512 call, and PSNR/SSIM over clean images.

For each tool, the degradation that its task undoes is applied with protocol parameters
sampled from a fixed seed per image; the tool runs with its default parameters
(estimating what it needs from the image), as an agent that knows only the task would.

    python benchmarks/toolbox.py [--data ../shared/data/clean/CBSD68] [--images 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import cv2
import numpy as np
from tqdm import tqdm

from common import ROOT, SHARED_DATA, write_report
from tiragent.eval.degradations import DEGRADATIONS, degrade
from tiragent.eval.metrics import create_metric
from tiragent.images import list_images, read_image
from tiragent.server.registry import list_tools

DEGRADATION_FOR_TASK = {d.task: d.name for d in DEGRADATIONS.values()}


def seconds_per_call(spec, size: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    clean = cv2.GaussianBlur(rng.random((size, size, 3), dtype=np.float32), (0, 0), 2.0)
    degraded, _ = degrade(clean, [DEGRADATION_FOR_TASK[spec.task]], seed=0)
    params = spec.validate({})
    spec.run(degraded, params)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        spec.run(degraded, params)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "clean" / "CBSD68"))
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", type=int, default=512, help="side of the timing image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    paths = list_images(args.data)[: args.images]
    cleans = [read_image(p) for p in paths]
    cleans = [c[: c.shape[0] // 4 * 4, : c.shape[1] // 4 * 4] for c in cleans]
    psnr, ssim = create_metric("psnr"), create_metric("ssim")
    rows = []
    for spec in tqdm(list_tools(), desc="tools"):
        name = DEGRADATION_FOR_TASK[spec.task]
        before, after, before_ssim, after_ssim = [], [], [], []
        for i, clean in enumerate(cleans):
            degraded, _ = degrade(clean, [name], seed=args.seed * 1000 + i)
            out = spec.run(degraded, spec.validate({}))
            baseline = cv2.resize(degraded, clean.shape[1::-1], interpolation=cv2.INTER_CUBIC) if spec.task == "sr" else degraded
            before.append(psnr(baseline, clean))
            after.append(psnr(out, clean))
            before_ssim.append(ssim(baseline, clean))
            after_ssim.append(ssim(out, clean))
        rows.append(
            {
                "tool": spec.key,
                "cost": spec.cost.value,
                "seconds_512": seconds_per_call(spec, args.size, 1 if spec.cost.value == "high" else 3),
                "psnr_in": float(np.mean(before)),
                "psnr_out": float(np.mean(after)),
                "ssim_in": float(np.mean(before_ssim)),
                "ssim_out": float(np.mean(after_ssim)),
            }
        )
    lines = [
        f"{len(cleans)} images of `{os.path.relpath(args.data, ROOT)}` (the first by name), one protocol-sampled degradation per image (seed {args.seed}); "
        f"tools at their default parameters. For super-resolution the input column is bicubic upscaling. "
        f"Timing: median of 3 calls on a {args.size}x{args.size} image (1 call for high-cost tools), one thread of work per call.\n",
        "| tool | cost | ms / 512x512 | PSNR in | PSNR out | gain (dB) | SSIM in | SSIM out |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tool']} | {r['cost']} | {1000 * r['seconds_512']:.0f} | {r['psnr_in']:.2f} | {r['psnr_out']:.2f} | "
            f"{r['psnr_out'] - r['psnr_in']:+.2f} | {r['ssim_in']:.3f} | {r['ssim_out']:.3f} |"
        )
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    print("written to", write_report("toolbox", markdown, {"args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
