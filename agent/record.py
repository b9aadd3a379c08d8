"""What a run leaves for people to look at: each restoration's trajectory and a thumbnail of every image it made.

``save_record`` writes, for one restored image, ``DIR/STEM.json`` (the trajectory, each step with the
file of its thumbnail) and ``DIR/STEM/`` (the input, every step's output, explored branches included,
and the result: small JPEGs for the step list, the input and the result also larger, for the
before/after comparison). ``tir-agent report`` turns a folder of them into one HTML page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tiragent.agent.actions import Trajectory
from tiragent.agent.session import ToolSession
from tiragent.images import write_image

THUMBNAIL = 192
"""Longest side of a step's thumbnail."""
COMPARISON = 512
"""Longest side of the input and the result in the before/after comparison."""


def _write(image: np.ndarray, path: Path) -> str:
    write_image(image, path, quality=85)
    return path.name


async def save_record(session: ToolSession, trajectory: Trajectory, folder: Path, stem: str, extra: dict[str, Any] | None = None) -> Path:
    """Thumbnails through the server (it scales them, so only small images travel) and the trajectory beside them."""
    images = Path(folder) / stem
    images.mkdir(parents=True, exist_ok=True)
    data = trajectory.to_json()
    data["files"] = {
        "input": f"{stem}/" + _write(await session.fetch(trajectory.original_id, max_side=COMPARISON), images / "input.jpg"),
        "result": f"{stem}/" + _write(await session.fetch(trajectory.final_id or trajectory.original_id, max_side=COMPARISON), images / "result.jpg"),
    }
    for step, record in zip(trajectory.steps, data["steps"]):
        if step.error is None:
            name = f"{step.index:02d}_{step.key}.jpg"
            record["thumbnail"] = f"{stem}/" + _write(await session.fetch(step.output_id, max_side=THUMBNAIL), images / name)
    data.update(extra or {})
    path = Path(folder) / f"{stem}.json"
    path.write_text(json.dumps(data, indent=2))
    return path
