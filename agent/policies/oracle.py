"""Oracle search with the ground truth: the best order and tools by PSNR against the clean image.

It expands a search tree whose nodes are images and whose edges are (task, model) calls,
each task used at most once along a path, and returns the node closest to the reference
(the original image included, so it never does worse than doing nothing). The tasks are
the benchmark's true ones when known, else the detected ones. High-cost tools are left
out by default to keep the tree affordable; the result is the upper bound for this
toolbox under that restriction.
"""

from __future__ import annotations

from tiragent.agent.actions import Action, Stop
from tiragent.agent.policy import Observation, detected_tasks, register_policy
from tiragent.errors import TirAgentError


@register_policy("oracle")
class OraclePolicy:
    name = "oracle"
    default_max_steps = 400

    def __init__(self, include_high_cost: bool = False, metric: str | tuple[str, ...] = "psnr") -> None:
        """``metric``: one full-reference metric, or several, scored as the mean of their normalised values."""
        self.include_high_cost = include_high_cost
        self.metrics = (metric,) if isinstance(metric, str) else tuple(metric)
        self.metric = "+".join(self.metrics)
        self.frontier: list[tuple[str, tuple[str, ...]]] = []
        self.pending: list[tuple[Action, tuple[str, ...]]] = []
        self.scores: dict[str, float] = {}
        self.remaining: dict[str, tuple[str, ...]] = {}

    async def _score(self, observation: Observation, image_id: str) -> float:
        if image_id not in self.scores:
            try:
                values = await observation.session.assess(image_id, observation.reference_id, list(self.metrics))
                if len(self.metrics) == 1:
                    self.scores[image_id] = values[self.metrics[0]]
                else:
                    from tiragent.eval.metrics import mean_normalized

                    self.scores[image_id] = mean_normalized(values, self.metrics)
            except TirAgentError:  # a different size from the reference (no super-resolution yet)
                self.scores[image_id] = float("-inf")
        return self.scores[image_id]

    async def reset(self, observation: Observation) -> None:
        if observation.reference_id is None:
            raise TirAgentError("the oracle policy needs the clean reference image (it runs in evaluation only)")
        # known tasks (an empty list: a clean image, nothing to do) come from a benchmark; else the detector's
        tasks = observation.known_tasks if observation.known_tasks is not None else await detected_tasks(observation)
        self.scores, self.pending = {}, []
        self.remaining = {observation.original_id: tuple(tasks)}
        await self._score(observation, observation.original_id)
        self._expand(observation, observation.original_id)

    def _models(self, observation: Observation, task: str) -> list[str]:
        models = observation.space.models[task]
        if self.include_high_cost:
            return models
        cheap = [m for m in models if observation.space.cost(task, m) != "high"]
        return cheap or models

    def _expand(self, observation: Observation, node: str) -> None:
        left = self.remaining[node]
        for task in left:
            rest = tuple(t for t in left if t != task)
            for model in self._models(observation, task):
                self.pending.append((Action(task, model, on=node), rest))

    async def next(self, observation: Observation) -> Action | Stop:
        last = observation.last
        if last is not None and last.error is None and last.output_id not in self.remaining:
            self.remaining[last.output_id] = self._last_rest
            await self._score(observation, last.output_id)
            self._expand(observation, last.output_id)
        if not self.pending:
            best = max(self.scores, key=lambda i: self.scores[i])
            return Stop(final=best, reason=f"searched {len(self.scores)} images; best {self.metric} {self.scores[best]:.2f}")
        action, self._last_rest = self.pending.pop()
        return action


    def final(self, observation: Observation) -> str:
        return max(self.scores, key=lambda i: self.scores[i])
