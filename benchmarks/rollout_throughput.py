"""Throughput of the RL rollout phase: every rollout of a step in flight at once, against one rollout at a time.

The same policy, the same server (one `tir-agent serve` over stdio), the same images, side by side
in one run, alternating the two modes ``--repeats`` times. An episode is the whole rollout phase of
``tir-agent train rl``: generation (batched across the episodes in flight), MCP tool calls (batched
by the server's pool), the views of each result, and the reward's full-reference scoring.

    python benchmarks/rollout_throughput.py --policy POLICY_DIR [--clean DIR] [--images 4] [--group 8] [--repeats 2]

Without ``--clean`` the images are crops of the photos scikit-image ships. A policy that only
answers garbage makes one-turn episodes: the table reports tool calls per episode so that what was
measured is plain.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_report

from tiragent.agent.conversation import ViewConfig, read_views, tool_schemas
from tiragent.agent.session import open_session
from tiragent.agent.tiny import chat_template
from tiragent.images import list_images, write_image
from tiragent.train.rollout import Generator, RolloutSettings, run_groups
from tiragent.train.samples import plan


def sample_photos(folder: Path) -> Path:
    from skimage import data
    from skimage.transform import resize

    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        image = getattr(data, name)()
        write_image(resize(image, (image.shape[0] // 2, image.shape[1] // 2), anti_aliasing=True).astype(np.float32), folder / f"{name}.png")
    return folder


async def measure(args: argparse.Namespace, clean: Path) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(args.policy)
    processor.chat_template = chat_template()
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(args.policy, dtype=torch.float32).eval()
    views = read_views(args.policy) or ViewConfig()
    samples = plan(args.images, list_images(clean), seed=args.seed, single_ratio=0.25, clean_ratio=0.0)
    runs: dict[str, list[dict]] = {"concurrent": [], "one at a time": []}
    async with open_session(args.server, device="cpu") as session:
        space = await session.action_space()
        settings = RolloutSettings(views=views, tools=tool_schemas(space, short=views.short_prompt), crop=args.crop, max_turns=args.max_turns,
                                   dimensions=("psnr", "ssim", "niqe"))  # fmt: skip
        # one warm-up of both modes: model loads at the server, first-call costs
        for concurrency in (None, 1):
            await run_groups(session, Generator(model, processor, max_new_tokens=args.max_new_tokens, temperature=args.temperature),
                             processor, samples[:1], 2, clean, settings, concurrency=concurrency)  # fmt: skip
        for repeat in range(args.repeats):
            for mode, concurrency in (("one at a time", 1), ("concurrent", None)):
                torch.manual_seed(args.seed + repeat)
                generator = Generator(model, processor, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                      max_batch=args.images * args.group)  # fmt: skip
                started = time.perf_counter()
                episodes = await run_groups(session, generator, processor, samples, args.group, clean, settings, concurrency=concurrency)
                seconds = time.perf_counter() - started
                runs[mode].append({
                    "seconds": seconds, "episodes": len(episodes), "episodes_per_s": len(episodes) / seconds,
                    "tool_calls_per_episode": statistics.mean(len(e.steps) for e in episodes),
                    "generations": sum(generator.batches), "mean_generation_batch": statistics.mean(generator.batches),
                    "invalid_rate": statistics.mean(bool(e.invalid) for e in episodes),
                })  # fmt: skip
                print(f"{mode:>14}: {len(episodes)} episodes in {seconds:.1f} s = {len(episodes) / seconds:.2f} episodes/s", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", type=Path, required=True, help="a policy folder (tir-agent train sft/rl output)")
    parser.add_argument("--clean", type=Path, help="clean photos (default: scikit-image's)")
    parser.add_argument("--server", help="streamable-HTTP URL of a running server (default: start one over stdio)")
    parser.add_argument("--images", type=int, default=4, help="images per step (B)")
    parser.add_argument("--group", type=int, default=8, help="rollouts per image (G)")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="rollout_throughput")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = asyncio.run(measure(args, args.clean or sample_photos(Path(tmp))))
    rows = []
    for mode, results in runs.items():
        rate = [r["episodes_per_s"] for r in results]
        rows.append(f"| {mode} | {statistics.mean(rate):.2f} ({min(rate):.2f}-{max(rate):.2f}) | {statistics.mean(r['seconds'] for r in results):.1f} | "
                    f"{statistics.mean(r['tool_calls_per_episode'] for r in results):.2f} | {statistics.mean(r['mean_generation_batch'] for r in results):.1f} | "
                    f"{statistics.mean(r['invalid_rate'] for r in results):.2f} |")  # fmt: skip
    speedup = statistics.mean(r["episodes_per_s"] for r in runs["concurrent"]) / statistics.mean(r["episodes_per_s"] for r in runs["one at a time"])
    markdown = (
        f"# RL rollout throughput: all rollouts in flight at once against one at a time\n\n"
        f"{args.images} images x {args.group} rollouts = {args.images * args.group} episodes per step, policy `{args.policy.name}`, "
        f"crops of {args.crop} px, at most {args.max_turns} tool calls and {args.max_new_tokens} new tokens per turn, temperature {args.temperature}; "
        f"one server over stdio for both modes; mean (range) over {args.repeats} alternating repeats after a warm-up.\n\n"
        "| rollouts | episodes/s | seconds per step | tool calls / episode | mean generation batch | invalid-call rate |\n"
        "|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + f"\n\nSpeed-up of concurrent rollouts: **{speedup:.2f}x**.\n"
    )
    path = write_report(args.name, markdown, {"runs": runs, "speedup": speedup, "args": {k: str(v) for k, v in vars(args).items()}})
    print(markdown)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
