"""`tir-agent eval`: run policies over a benchmark folder and score every result against its target."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tiragent.agent.loop import restore
from tiragent.agent.policy import create_policy
from tiragent.agent.record import save_record
from tiragent.agent.session import open_session
from tiragent.eval.bench import load_manifest
from tiragent.eval.degradations import get_degradation
from tiragent.eval.metrics import evaluate, resized_to
from tiragent.images import read_image

METRICS = ["psnr", "ssim", "ms_ssim", "niqe", "piqe"]


def score(image: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Metrics against the target; a result of another size is resized to the target's (area or bicubic)."""
    return evaluate(resized_to(image, target), target, METRICS)


async def evaluate_policies(
    bench: Path,
    policies: list[str],
    *,
    server: str | None = None,
    max_steps: int | None = None,
    limit: int | None = None,
    device: str = "auto",
    trajectories: Path | None = None,
) -> list[dict[str, Any]]:
    """One record per (policy, image), plus the degraded input itself as policy 'input'; with ``trajectories``, each
    restoration's trajectory and step thumbnails go to ``trajectories/POLICY/`` (for ``tir-agent report``)."""
    items = load_manifest(bench)[:limit]
    records: list[dict[str, Any]] = []
    for item in tqdm(items, desc="input", unit="img", file=sys.stderr):
        degraded, target = read_image(bench / "input" / item.name), read_image(bench / "target" / item.name)
        records.append({"policy": "input", "name": item.name, "group": item.group, "combination": "+".join(item.combination),
                        "tool_calls": 0, "seconds": 0.0, **score(degraded, target)})  # fmt: skip
    async with open_session(server, device=device) as session:
        space = await session.action_space()
        for spec in policies:
            agent = create_policy(spec)
            for item in tqdm(items, desc=agent.name, unit="img", file=sys.stderr):
                degraded, target = read_image(bench / "input" / item.name), read_image(bench / "target" / item.name)
                known = [get_degradation(d).task for d in item.combination]
                result, trajectory = await restore(
                    session, degraded, agent, max_steps=max_steps, reference=target if agent.name == "oracle" else None,
                    known_tasks=known, name=item.name,
                )  # fmt: skip
                label = spec if agent.name == "qwen" else agent.name
                if trajectories is not None:
                    await save_record(session, trajectory, trajectories / Path(label).name, Path(item.name).stem, {"policy": label})
                records.append({
                    "policy": label, "name": item.name, "group": item.group,
                    "combination": "+".join(item.combination), "tool_calls": len(trajectory.steps),
                    "seconds": trajectory.seconds, "path": [s.key for s in trajectory.path()],
                    "calls_by_cost": dict(Counter(space.cost(s.task, s.model) for s in trajectory.steps)),
                    "learned_calls": sum(space.facts[s.task][s.model].learned for s in trajectory.steps), **score(result, target),
                })  # fmt: skip
    return records
