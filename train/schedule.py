"""What the small trainers here (the detector, the vision tower) share: the learning-rate schedule and resuming."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tiragent.errors import ParameterError


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
