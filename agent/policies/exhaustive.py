"""Exhaustive training-free agent in the manner of AgenticIR.

Perceive the degradations, schedule the tasks, and for each task try every tool on the
current image; keep the result with the best no-reference quality score, or roll back
(skip the task) when every tool made the image worse.
"""

from __future__ import annotations

from tiragent.agent.actions import Action, Stop
from tiragent.agent.policy import Observation, detected_tasks, quality_score, register_policy, schedule


@register_policy("exhaustive")
class ExhaustivePolicy:
    name = "exhaustive"
    default_max_steps = 40

    def __init__(self) -> None:
        self.pending: list[Action] = []
        self.tasks: list[str] = []
        self.base = ""
        self.tried: list[str] = []

    async def reset(self, observation: Observation) -> None:
        self.tasks = schedule(await detected_tasks(observation))
        self.base = observation.original_id
        self.pending, self.tried = [], []

    def _choose(self, observation: Observation) -> None:
        """After every tool of a task ran: keep the best result, or roll back to the base."""
        candidates = [self.base, *self.tried]
        self.base = max(candidates, key=lambda i: (quality_score(observation.metrics[i]), i == self.base))
        self.tried = []

    async def next(self, observation: Observation) -> Action | Stop:
        last = observation.last
        if last is not None and last.error is None and last.input_id == self.base and last.output_id not in self.tried:
            self.tried.append(last.output_id)
        if not self.pending:
            if self.tried or (last is not None and last.input_id == self.base):
                self._choose(observation)
            if not self.tasks:
                return Stop(final=self.base, reason="every detected task tried")
            task = self.tasks.pop(0)
            self.pending = [Action(task, model, on=self.base) for model in observation.space.models[task]]
        action = self.pending.pop(0)
        return Action(action.task, action.model, on=self.base)

    def final(self, observation: Observation) -> str:
        """The best image so far, when the step budget runs out mid-task."""
        candidates = [self.base, *self.tried]
        return max(candidates, key=lambda i: quality_score(observation.metrics[i]))
