"""Throughput of the RL rollout phase: every rollout of a step in flight at once, against one rollout at a time.

The same policy, the same server settings, the same images, side by side in one run, alternating
the two modes ``--repeats`` times; each run gets a fresh `tir-agent serve` (over stdio), so that no
run finds another's results in the server's metric cache. An episode is the whole rollout phase of
``tir-agent train rl``: generation (batched across the episodes in flight), MCP tool calls (batched
by the server's pool), the views of each result, and the reward's full-reference scoring.

    python benchmarks/rollout_throughput.py [--policy POLICY_DIR] [--clean DIR] [--images 4] [--group 8] [--repeats 2]

Without ``--clean`` the images are crops of the photos scikit-image ships. Without ``--policy`` it
makes the tiny policy of the CI test the same way (a random 128-wide Qwen3-VL, gen-sft on four
single-degradation crops, 60 SFT steps), so that episodes make real tool calls; the table reports
tool calls per episode so that what was measured is plain.
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
    # The server caches what it computed, by content, so no run may find another's results there: without --server each
    # run gets a fresh server (started over stdio, warmed up on other images) and every run plays the same images; with
    # --server (one server for all) each run plays its own images from the same plan.
    fresh = args.server is None
    count = 1 if fresh else 2 * args.repeats
    planned = plan(args.images * (count + 1), list_images(clean), seed=args.seed, single_ratio=0.25, clean_ratio=0.0)
    warm_up, measured = planned[: args.images], [planned[(i + 1) * args.images : (i + 2) * args.images] for i in range(count)]
    runs: dict[str, list[dict]] = {"concurrent": [], "one at a time": []}
    index = 0
    for repeat in range(args.repeats):
        for mode, concurrency in (("one at a time", 1), ("concurrent", None)) if repeat % 2 == 0 else (("concurrent", None), ("one at a time", 1)):
            samples = measured[0 if fresh else index]
            index += 1
            async with open_session(args.server, device="cpu") as session:
                space = await session.action_space()
                settings = RolloutSettings(views=views, tools=tool_schemas(space, short=views.short_prompt), crop=args.crop,
                                           max_turns=args.max_turns, dimensions=("psnr", "ssim", "niqe"))  # fmt: skip
                if fresh or index == 1:  # model loads at the server, first-call costs
                    await run_groups(session, Generator(model, processor, max_new_tokens=args.max_new_tokens, temperature=args.temperature),
                                     processor, warm_up, 2, clean, settings)  # fmt: skip
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


def make_policy(clean: Path, folder: Path) -> Path:
    from tiragent.agent.tiny import build_tiny_qwen
    from tiragent.cli import main as cli

    tiny = build_tiny_qwen(folder / "tiny", hidden_size=128)
    assert cli(["train", "gen-sft", "--clean", str(clean), "--out", str(folder / "data"), "--images", "4", "--crop", "64", "--single_ratio", "1",
                "--clean_ratio", "0", "--substitute_ratio", "0", "--seed", "1", "--whole_view", "48", "--crop_view", "0", "--short_prompt",
                "--device", "cpu"]) == 0  # fmt: skip
    assert cli(["train", "sft", "--data", str(folder / "data"), "--model", str(tiny), "--out", str(folder / "policy"), "--max_steps", "60",
                "--batch_size", "4", "--lr", "3e-3"]) == 0  # fmt: skip
    return folder / "policy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", type=Path, help="a policy folder (tir-agent train sft/rl output; default: make the CI test's)")
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
        clean = args.clean or sample_photos(Path(tmp))
        made = args.policy is None
        if made:
            args.policy = make_policy(clean, Path(tmp))
        runs = asyncio.run(measure(args, clean))
        if made:
            args.policy = Path("the CI test's tiny policy (made by this script)")
    rows = []
    for mode, results in runs.items():
        rate = [r["episodes_per_s"] for r in results]
        rows.append(f"| {mode} | {statistics.mean(rate):.2f} ({min(rate):.2f}-{max(rate):.2f}) | {statistics.mean(r['seconds'] for r in results):.1f} | "
                    f"{statistics.mean(r['tool_calls_per_episode'] for r in results):.2f} | {statistics.mean(r['mean_generation_batch'] for r in results):.1f} | "
                    f"{statistics.mean(r['invalid_rate'] for r in results):.2f} |")  # fmt: skip
    speedup = statistics.mean(r["episodes_per_s"] for r in runs["concurrent"]) / statistics.mean(r["episodes_per_s"] for r in runs["one at a time"])
    markdown = (
        f"# RL rollout throughput: all rollouts in flight at once against one at a time\n\n"
        f"{args.images} images x {args.group} rollouts = {args.images * args.group} episodes per step, policy: {args.policy}, "
        f"crops of {args.crop} px, at most {args.max_turns} tool calls and {args.max_new_tokens} new tokens per turn, temperature {args.temperature}; "
        f"mean (range) over {args.repeats} repeats, the modes' order alternating; "
        + ("each run on a fresh `tir-agent serve` over stdio, warmed up on other images, all runs on the same images (so that no run finds "
           "another's results in the server's caches)" if args.server is None else f"one server ({args.server}) for all runs, each run on its own images from the same plan")
        + ".\n\n"
        "| rollouts | episodes/s | seconds per step | tool calls / episode | mean generation batch | invalid-call rate |\n"
        "|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + f"\n\nSpeed-up of concurrent rollouts: **{speedup:.2f}x**.\n"
    )
    path = write_report(args.name, markdown, {"runs": runs, "speedup": speedup, "args": {k: str(v) for k, v in vars(args).items()}})
    print(markdown)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
