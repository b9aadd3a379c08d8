"""Fixed-order pipeline: detect the degradations once, then one default tool per task in a fixed order."""

from __future__ import annotations

from tiragent.agent.actions import Action, Stop
from tiragent.agent.policy import Observation, detected_tasks, register_policy, schedule


@register_policy("fixed")
class FixedPolicy:
    name = "fixed"
    default_max_steps = 8

    def __init__(self) -> None:
        self.plan: list[str] = []

    async def reset(self, observation: Observation) -> None:
        self.plan = schedule(await detected_tasks(observation))

    async def next(self, observation: Observation) -> Action | Stop:
        if not self.plan:
            return Stop(reason="every detected task done")
        task = self.plan.pop(0)
        return Action(task, observation.space.defaults[task])
