"""How varied a set of trajectories is: in their tasks' order and in their choice of tools.

Used for the SFT data card and, per group of rollouts, in the RL logs. A trajectory is a sequence
of ``task.model`` keys.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable


def diversity(trajectories: Iterable[tuple[str, ...]]) -> dict[str, float]:
    """``distinct``: distinct trajectories; ``order``: share of task sets of two or more seen in more than one order;
    ``tools``: share of task sequences seen with more than one choice of tools."""
    trajectories = [tuple(t) for t in trajectories]
    orders: dict[tuple[str, ...], set[tuple[str, ...]]] = defaultdict(set)
    tools: dict[tuple[str, ...], set[tuple[str, ...]]] = defaultdict(set)
    for steps in trajectories:
        tasks = tuple(s.split(".")[0] for s in steps)
        orders[tuple(sorted(tasks))].add(tasks)
        tools[tasks].add(steps)
    multi = [v for k, v in orders.items() if len(k) >= 2]
    return {
        "distinct": float(len(set(trajectories))),
        "order": sum(len(v) > 1 for v in multi) / len(multi) if multi else 0.0,
        "tools": sum(len(v) > 1 for v in tools.values()) / len(tools) if tools else 0.0,
    }
