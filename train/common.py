"""What the small trainers here (the detector, the vision tower) share: the photo split, the recipe a run records and
checks on resume, the key of a rendered cache, the learning-rate schedule and resuming."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tiragent.errors import ParameterError
from tiragent.images import list_images


def split_photos(folders: list[Path], val_fraction: float) -> tuple[list[Path], list[Path]]:
    """The photos of ``folders`` split, always the same way, into training photos and ``val_fraction`` held out."""
    if not folders:
        raise ParameterError("--data needs at least one folder of clean training photos")
    paths = [p for folder in folders for p in list_images(folder)]
    if len(paths) < 2:
        raise ParameterError(f"--data has {len(paths)} images; at least 2 are needed (one held out for validation)")
    order = np.random.default_rng(12345).permutation(len(paths))
    held = max(1, round(val_fraction * len(paths)))
    return [paths[i] for i in order[held:]], [paths[i] for i in order[:held]]


def recipe_of(config: Any, skip: tuple[str, ...]) -> dict[str, Any]:
    """A config dataclass as JSON-ready settings, without the fields in ``skip`` (where it is written, whether it resumed)."""
    return {k: str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, list) else v for k, v in asdict(config).items() if k not in skip}


def render_key(recipe: dict[str, Any], fields: tuple[str, ...], count: int) -> str:
    """What a rendered cache of ``count`` samples depends on: a cache stored under another key is rendered again."""
    return json.dumps({"count": count, **{k: recipe[k] for k in fields}}, sort_keys=True)


def warmup_cosine(optimizer: Any, steps: int) -> Any:
    """A linear warm-up over the first 5% of the steps, then cosine decay to zero at ``steps``."""
    import torch

    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    )


def resumable(checkpoint: Path, recipe: dict[str, Any]) -> dict[str, Any] | None:
    """The state saved in ``checkpoint`` (None where there is none), refused when it was trained under another recipe."""
    import torch

    if not checkpoint.is_file():
        return None
    state = torch.load(checkpoint, weights_only=False)
    if state.get("recipe", recipe) != recipe:
        changed = sorted(k for k in recipe if state["recipe"].get(k) != recipe[k])
        raise ParameterError(f"{checkpoint} was trained under another recipe ({', '.join(changed)} differ): use another --out, or delete it to start again")
    return state
