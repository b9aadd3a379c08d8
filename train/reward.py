"""The multi-dimensional adaptive reward of RL training.

An episode is scored on several heterogeneous quality dimensions: the improvement of each
metric over the degraded input, each metric first mapped onto [0, 1] with higher better
(``tiragent.eval.metrics.normalized``), so that a dimension is "how much closer to perfect".
By default PSNR, SSIM and MS-SSIM against the clean image and NIQE (no reference, fitted
offline), so no single metric can be gamed alone.

The formula (the paper does not publish one; this is ours):

1. Within a group of rollouts of the same image, each dimension is standardised on its own,
   ``z_i = (d_i - mean_group(d_i)) / (std_group(d_i) + eps)``, with ``z_i = 0`` when the group
   does not vary in it; as in multi-objective GRPO, a dimension with a large scale (PSNR
   moves more than SSIM) cannot drown the others in the advantage.
2. The reward is ``sum_i w_i z_i``, plus a format term (``-format_penalty`` for an episode that
   ended on an invalid tool call) and ``-call_cost`` per tool call.
3. The weights adapt to the trends of training, against reward hacking. After every RL step,
   each dimension's mean improvement over the batch updates an exponential moving average
   ``m_i`` (decay ``ema_decay``) and a moving variance ``v_i`` of the improvements. The trend of
   a dimension is the rise of its EMA over the last ``horizon`` steps in units of its own
   spread, ``s_i = (m_i(t) - m_i(t - horizon)) / (sqrt(v_i) + eps)`` (clipped to +-``max_trend``);
   the weights are ``w_i = b_i exp(-s_i / T) / sum_j b_j exp(-s_j / T)`` with prior weights
   ``b_i`` and temperature ``T``. A dimension that keeps rising while the others stall (the
   signature of a policy that learned to please one metric) loses weight; lagging ones gain.

Why this and not DWA's loss ratio ``L(t-1) / L(t-2)``: improvements are near zero or
negative early in training, where a ratio is undefined or flips sign; a slope measured in the
dimension's own spread is scale-free, defined at zero, and a constant metric has zero slope
and zero spread, which the ``eps`` keeps finite.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tiragent.eval.metrics import normalized
from tiragent.train.configs import RewardConfig

EPS = 1e-6


@dataclass(frozen=True)
class Outcome:
    """One finished episode: the metrics of the degraded input and of the result, how it ended, how many calls."""

    before: dict[str, float]
    after: dict[str, float]
    tool_calls: int = 0
    invalid: bool = False


class AdaptiveReward:
    def __init__(self, config: RewardConfig | None = None) -> None:
        self.config = config or RewardConfig()
        c = self.config
        self.prior = list(c.prior_weights) if c.prior_weights is not None else [1.0] * len(c.dimensions)
        total = sum(self.prior)
        self.prior = [p / total for p in self.prior]
        self.ema: list[float | None] = [None] * len(c.dimensions)
        self.var: list[float] = [0.0] * len(c.dimensions)
        self.history: deque[list[float]] = deque(maxlen=c.horizon + 1)
        self.steps = 0

    def improvements(self, outcome: Outcome) -> list[float]:
        """Per dimension: normalised metric of the result minus that of the input (positive: better)."""
        return [normalized(name, outcome.after[name]) - normalized(name, outcome.before[name]) for name in self.config.dimensions]

    def trends(self) -> list[float]:
        c = self.config
        if len(self.history) < 2:
            return [0.0] * len(c.dimensions)
        first, last = self.history[0], self.history[-1]
        return [
            max(-c.max_trend, min(c.max_trend, (b - a) / (math.sqrt(v) + EPS)))
            for a, b, v in zip(first, last, self.var)
        ]

    @property
    def weights(self) -> list[float]:
        """Current weights of the dimensions; they sum to 1."""
        if not self.config.adaptive:
            return list(self.prior)
        raw = [p * math.exp(-s / self.config.weight_temperature) for p, s in zip(self.prior, self.trends())]
        total = sum(raw)
        return [r / total for r in raw]

    def score_group(self, outcomes: Sequence[Outcome]) -> list[float]:
        """Rewards of a group of rollouts of one image (their advantages are taken within the group)."""
        c = self.config
        deltas = [self.improvements(o) for o in outcomes]
        weights = self.weights
        rewards = [0.0] * len(outcomes)
        for i, w in enumerate(weights):
            column = [d[i] for d in deltas]
            mean = sum(column) / len(column)
            std = math.sqrt(sum((x - mean) ** 2 for x in column) / len(column))
            for k, x in enumerate(column):
                rewards[k] += w * ((x - mean) / (std + EPS) if std > EPS else 0.0)
        return [r - c.format_penalty * o.invalid - c.call_cost * o.tool_calls for r, o in zip(rewards, outcomes)]

    def update(self, outcomes: Sequence[Outcome]) -> None:
        """After an RL step: fold the batch's mean improvement of each dimension into its moving average."""
        if not outcomes:
            return
        c = self.config
        deltas = [self.improvements(o) for o in outcomes]
        for i in range(len(c.dimensions)):
            column = [d[i] for d in deltas]
            mean = sum(column) / len(column)
            previous = self.ema[i]
            if previous is None:
                self.ema[i] = mean
                self.var[i] = sum((x - mean) ** 2 for x in column) / len(column)
            else:
                self.ema[i] = c.ema_decay * previous + (1 - c.ema_decay) * mean
                self.var[i] = c.ema_decay * self.var[i] + (1 - c.ema_decay) * sum((x - previous) ** 2 for x in column) / len(column)
        self.history.append([float(e) for e in self.ema])  # type: ignore[arg-type]
        self.steps += 1

    def log(self) -> dict[str, Any]:
        """What to write to the training log: weights, trends and moving averages by dimension."""
        names = self.config.dimensions
        return {
            "weights": dict(zip(names, self.weights)),
            "trends": dict(zip(names, self.trends())),
            "ema": dict(zip(names, self.ema)),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"ema": list(self.ema), "var": list(self.var), "history": [list(h) for h in self.history], "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema, self.var, self.steps = list(state["ema"]), list(state["var"]), int(state["steps"])
        self.history = deque((list(h) for h in state["history"]), maxlen=self.config.horizon + 1)
