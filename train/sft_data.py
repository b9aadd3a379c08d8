"""SFT data: searched trajectories over MCP, with exploration-driven perturbations (``tir-agent train gen-sft``).

For each training image: a random crop of a clean photo, degraded with one of the benchmark
protocol's 16 combinations, a single degradation, or nothing (so that the policy learns to
stop at once). The oracle search (``agent/policies/oracle.py``) finds the best order of the
true tasks and the best tools with the clean image as reference, scored by the full-reference
part of the reward (mean of normalised PSNR, SSIM and MS-SSIM), keeping the best image seen,
the input included: so a trajectory stops where no step improves. Every call is an MCP call;
``workers`` images are searched at once so the server's pool batches them.

Perturbations add trajectories whose task order is shuffled, or in which one step's tool is
replaced by another tool of the same task; each is re-executed through MCP, so its images and
outcomes are real. Each trajectory becomes one conversation in the format of
``agent/conversation.py`` (the one the policy acts in), its images written as PNG files.

Layout of the output folder (``datasets.load_dataset("json", data_files=".../data.jsonl")``):
``data.jsonl`` (one conversation per line: ``messages`` with image placeholders, ``images``
as paths relative to the folder, the trajectory, its kind and its gains), ``images/``,
``tools.json`` (the tool schemas the conversations were made with) and ``card.json`` / ``card.md``.
A rerun with the same folder continues after the last finished image.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tiragent.agent.actions import Action, Stop
from tiragent.agent.conversation import (
    ViewConfig,
    call_turn,
    fetch_views,
    perceived,
    result_text,
    result_turn,
    split_images,
    stop_turn,
    system_turn,
    task_turn,
    tool_schemas,
    write_views,
)
from tiragent.agent.loop import restore
from tiragent.agent.policies.oracle import OraclePolicy
from tiragent.agent.policy import Observation
from tiragent.agent.session import ActionSpace, ToolCallError, ToolSession, open_session
from tiragent.errors import TirAgentError
from tiragent.eval.metrics import mean_normalized, resized_to
from tiragent.images import list_images, write_image
from tiragent.train.configs import GenSFTConfig
from tiragent.train.diversity import diversity
from tiragent.train.samples import Sample, make_pair_in_context, plan

FULL_REFERENCE = ("psnr", "ssim", "ms_ssim")


class Replay:
    """A policy that plays back a fixed list of (task, model) steps, then stops: re-executes a perturbed trajectory."""

    name = "replay"
    default_max_steps = 16

    def __init__(self, steps: list[tuple[str, str]]) -> None:
        self.steps = list(steps)

    async def reset(self, observation: Observation) -> None:
        pass

    async def next(self, observation: Observation) -> Action | Stop:
        if len(observation.steps) >= len(self.steps):
            return Stop(reason="replayed")
        task, model = self.steps[len(observation.steps)]
        return Action(task, model)


def perturbations(path: list[tuple[str, str]], space: ActionSpace, rng: random.Random, config: GenSFTConfig) -> list[tuple[str, list[tuple[str, str]]]]:
    """Shuffled-order and tool-substituted twins of a searched path (only where they differ from it)."""
    twins: list[tuple[str, list[tuple[str, str]]]] = []
    if len(path) >= 2 and rng.random() < config.shuffle_ratio:
        shuffled = path[:]
        while shuffled == path:
            rng.shuffle(shuffled)
        twins.append(("shuffled", shuffled))
    if path and rng.random() < config.substitute_ratio:
        i = rng.randrange(len(path))
        task, model = path[i]
        others = [m for m in space.models[task] if m != model and space.cost(task, m) != "high"]
        if others:
            substituted = path[:]
            substituted[i] = (task, rng.choice(others))
            twins.append(("substituted", substituted))
    return twins


async def conversation(
    session: ToolSession, trajectory: Any, original: np.ndarray, views: ViewConfig, image_dir: Path, stem: str, base: Path, said: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """The trajectory's path as the conversation the policy acts in, its images written as PNG files; ``said``: the
    prompt's detector reading (``perceived``), the same for every trajectory of one image."""
    h, w = original.shape[:2]
    shown = await fetch_views(session, trajectory.original_id, w, h, views)
    messages = [system_turn(views.short_prompt), task_turn(shown, said)]
    for step in trajectory.path():
        messages.append(call_turn(step.task, {"model": step.model}))
        shown = await fetch_views(session, step.output_id, step.width, step.height, views)
        messages.append(result_turn(result_text(step.task, step.model, step.metrics), shown))
    messages.append(stop_turn())
    placeholders, images = split_images(messages)
    paths = []
    for k, image in enumerate(images):
        path = image_dir / f"{stem}_{k}.png"
        write_image(image, path)
        paths.append(str(path.relative_to(base)))
    return placeholders, paths


async def gains(session: ToolSession, trajectory: Any, before: dict[str, float], reference_id: str) -> dict[str, float]:
    """Gain of the trajectory's result over the input's metrics ``before``."""
    try:
        after = await session.assess(trajectory.final_id, reference_id, list(FULL_REFERENCE))
    except TirAgentError:  # another size than the clean image (super-resolution never ran)
        return {"psnr": float("nan"), "score": float("nan")}
    return {"psnr": after["psnr"] - before["psnr"], "score": mean_normalized(after, FULL_REFERENCE) - mean_normalized(before, FULL_REFERENCE)}


SearchKey = tuple[str, int, tuple[str, ...], bool]
REUSE_FIELDS = ("crop", "degradations", "search_metrics")
"""What a reused search must share with this run for its paths to be this run's searches."""


def search_key(sample: Sample) -> SearchKey:
    return sample.source, sample.seed, tuple(sample.combination), sample.camera


def earlier_searches(folder: Path, config: GenSFTConfig) -> dict[SearchKey, tuple[list[tuple[str, str]], int]]:
    """The searched path and its search's call count of every image in an earlier gen-sft folder, by sample."""
    card_file, data = folder / "card.json", folder / "data.jsonl"
    if not card_file.is_file() or not data.is_file():
        raise TirAgentError(f"--reuse_search {folder}: not a finished gen-sft folder (no card.json or data.jsonl)")
    earlier = json.loads(card_file.read_text())["config"]
    ours = config_record(config)
    differ = [k for k in REUSE_FIELDS if earlier.get(k) != ours[k]]
    if differ:
        raise TirAgentError(f"--reuse_search {folder} was made with other {', '.join(differ)} ({', '.join(f'{k}={earlier.get(k)!r}' for k in differ)}): its searches are not this run's")
    found = {}
    for line in data.read_text().splitlines():
        r = json.loads(line) if line.strip() else None
        if r and r["kind"] == "searched":
            path = [tuple(step.split(".", 1)) for step in r["trajectory"]]
            found[(r["source"], r["seed"], tuple(r["combination"]), bool(r.get("camera", False)))] = (path, r["search_calls"])
    return found


async def _one(
    session: ToolSession, sample: Sample, config: GenSFTConfig, space: ActionSpace, reuse: dict[SearchKey, tuple[list[tuple[str, str]], int]] | None = None
) -> list[dict[str, Any]]:
    degraded, clean, context = make_pair_in_context(sample, config.clean, config.crop, config.degradations, config.perception_context)
    earlier = (reuse or {}).get(search_key(sample))
    if earlier is not None:  # the search's path, replayed: the same steps and images, without the search's calls
        _, searched = await restore(session, degraded, Replay(earlier[0]), name=f"{sample.index:06d}")
        search_calls = earlier[1]
    else:
        search = OraclePolicy(metric=tuple(config.search_metrics))
        _, searched = await restore(session, degraded, search, reference=clean, known_tasks=sample.tasks, name=f"{sample.index:06d}")
        search_calls = len(searched.steps)
    reference_id = await session.load(clean)
    # the input's metrics, once for every trajectory of the image (a smaller input is scored upscaled)
    before = await session.assess(await session.load(resized_to(degraded, clean)), reference_id, list(FULL_REFERENCE))
    path = [(s.task, s.model) for s in searched.path()]
    rng = random.Random(sample.seed)
    runs = [("searched", searched, search_calls)]
    for kind, steps in perturbations(path, space, rng, config):
        _, replayed = await restore(session, degraded, Replay(steps), name=f"{sample.index:06d}-{kind}")
        runs.append((kind, replayed, len(steps)))
    # the detector's reading, once per image: of the larger window where there is one, else of the input
    said = await perceived(session, await session.load(context) if context is not None else searched.original_id, config.views)
    records = []
    for kind, trajectory, calls in runs:
        stem = f"{sample.index:06d}_{kind}"
        messages, images = await conversation(session, trajectory, degraded, config.views, config.out / "images", stem, config.out, said)
        records.append({
            "id": stem, "kind": kind, "combination": list(sample.combination), "camera": sample.camera, "source": sample.source, "seed": sample.seed,
            "trajectory": [f"{s.task}.{s.model}" for s in trajectory.path()], "search_calls": calls,
            "gain": await gains(session, trajectory, before, reference_id), "messages": messages, "images": images,
            "reused_search": kind == "searched" and earlier is not None,
        })  # fmt: skip
    return records


def done_indices(data: Path) -> set[int]:
    if not data.exists():
        return set()
    done = set()
    for line in data.read_text().splitlines():
        if line.strip():
            done.add(int(json.loads(line)["id"].split("_", 1)[0]))
    return done


async def generate(config: GenSFTConfig) -> dict[str, Any]:
    """Make (or continue) the dataset; returns its card."""
    sources = list_images(config.clean)
    if not sources:
        raise TirAgentError(f"{config.clean}: no images")
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "images").mkdir(exist_ok=True)
    data = config.out / "data.jsonl"
    done = done_indices(data)
    samples = plan(config.images, sources, seed=config.seed, single_ratio=config.single_ratio, clean_ratio=config.clean_ratio, camera_ratio=config.camera_ratio)
    todo = [s for s in samples if s.index not in done]
    reuse = earlier_searches(config.reuse_search, config) if config.reuse_search else None
    async with open_session(config.server, device=config.device) as session:
        space = await session.action_space()
        (config.out / "tools.json").write_text(json.dumps(tool_schemas(space, short=config.short_prompt), indent=1))
        write_views(config.out, config.views)
        slots = asyncio.Semaphore(max(1, config.workers))
        progress = tqdm(total=config.images, initial=config.images - len(todo), desc="gen-sft", unit="img")

        async def worker(sample: Sample) -> None:
            async with slots:
                try:
                    records = await _one(session, sample, config, space, reuse)
                except ToolCallError as err:  # one image's failing call costs that image, not the run (a dead server still ends it)
                    records = []
                    with (config.out / "failed.jsonl").open("a") as f:
                        f.write(json.dumps({"index": sample.index, "source": sample.source, "combination": list(sample.combination), "error": str(err)}) + "\n")
                    progress.write(f"gen-sft: image {sample.index} ({sample.source}, {'+'.join(sample.combination) or 'clean'}) skipped: {err}", file=sys.stderr)
            if records:
                with data.open("a") as f:  # whole images only: a crash never leaves half of one
                    f.write("".join(json.dumps(r) + "\n" for r in records))
            progress.update(1)

        await asyncio.gather(*(worker(s) for s in todo))
        progress.close()
    card = dataset_card(config, data)
    (config.out / "card.json").write_text(json.dumps(card, indent=2))
    (config.out / "card.md").write_text(card_markdown(card))
    return card


def config_record(config: GenSFTConfig) -> dict[str, Any]:
    """The run's options as its card records them (paths as text): what a later run compares its own with."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}


def dataset_card(config: GenSFTConfig, data: Path) -> dict[str, Any]:
    records = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    searched = [r for r in records if r["kind"] == "searched"]
    spread = diversity(r["trajectory"] for r in records)
    mean = lambda xs: float(np.nanmean(xs)) if xs else 0.0  # noqa: E731
    return {
        "config": config_record(config),
        "conversations": len(records),
        "images": len(searched),
        "failed_images": len((config.out / "failed.jsonl").read_text().splitlines()) if (config.out / "failed.jsonl").is_file() else 0,
        "kinds": dict(Counter(r["kind"] for r in records)),
        "per_combination": dict(sorted(Counter(("camera " if r.get("camera") else "") + ("+".join(r["combination"]) or "clean") for r in searched).items())),
        "searched_gain_psnr_db": mean([r["gain"]["psnr"] for r in searched]),
        "searched_gain_score": mean([r["gain"]["score"] for r in searched]),
        "search_calls_per_trajectory": mean([r["search_calls"] for r in searched]),
        "reused_searches": sum(bool(r.get("reused_search")) for r in searched),
        "steps_per_trajectory": mean([len(r["trajectory"]) for r in records]),
        "distinct_trajectories": int(spread["distinct"]),
        "order_diversity": spread["order"],
        "tool_diversity": spread["tools"],
    }


def card_markdown(card: dict[str, Any]) -> str:
    lines = [
        "# SFT data card", "",
        f"{card['conversations']} conversations from {card['images']} images ({', '.join(f'{k} {v}' for k, v in card['kinds'].items())}).", "",
        f"- Searched trajectories gain {card['searched_gain_psnr_db']:.2f} dB PSNR and {card['searched_gain_score']:.3f} in the full-reference "
        f"score over their input, with {card['search_calls_per_trajectory']:.1f} search calls each and {card['steps_per_trajectory']:.2f} steps per trajectory"
        + (f"; {card['reused_searches']} of the searches were made by an earlier run (--reuse_search) and replayed here." if card.get("reused_searches") else "."),
        f"- Diversity: {card['distinct_trajectories']} distinct trajectories; order diversity {card['order_diversity']:.2f} (share of task sets of two "
        f"or more seen in more than one order); tool diversity {card['tool_diversity']:.2f} (share of task sequences seen with more than one choice of tools).",
        "", "| combination | images |", "|---|---:|", *(f"| {k} | {v} |" for k, v in card["per_combination"].items()), "",
    ]  # fmt: skip
    return "\n".join(lines)
