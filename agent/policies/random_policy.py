"""Random policy: one to three random tasks, each with a random model; the floor every policy must beat."""

from __future__ import annotations

import random

from tiragent.agent.actions import Action, Stop
from tiragent.agent.policy import Observation, register_policy


@register_policy("random")
class RandomPolicy:
    name = "random"
    default_max_steps = 3

    def __init__(self, seed: int | None = 0) -> None:
        self.rng = random.Random(seed)
        self.plan: list[str] = []

    async def reset(self, observation: Observation) -> None:
        tasks = list(observation.space.models)
        self.plan = self.rng.sample(tasks, self.rng.randint(1, min(3, len(tasks))))

    async def next(self, observation: Observation) -> Action | Stop:
        if not self.plan:
            return Stop(reason="random plan done")
        task = self.plan.pop(0)
        return Action(task, self.rng.choice(observation.space.models[task]))
