"""What a policy decides, and what the agent records: actions, steps and trajectories."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Action:
    """Call restoration tool ``task`` with ``model`` and ``params`` on image ``on`` (default: the current image)."""

    task: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    on: str | None = None

    @property
    def key(self) -> str:
        return f"{self.task}.{self.model}"


@dataclass(frozen=True)
class Stop:
    """Stop; the result is ``final`` (default: the current image)."""

    final: str | None = None
    reason: str = ""


@dataclass
class Step:
    """One tool call the agent made."""

    index: int
    task: str
    model: str
    params: dict[str, Any]
    input_id: str
    output_id: str
    width: int
    height: int
    seconds: float
    queue_wait_seconds: float
    metrics: dict[str, float]
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.task}.{self.model}"


@dataclass
class Trajectory:
    """Everything one restoration did: every tool call, and which of them lead to the result."""

    input: str
    original_id: str
    final_id: str = ""
    policy: str = ""
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0
    stop_reason: str = ""
    original_metrics: dict[str, float] = field(default_factory=dict)

    def path(self) -> list[Step]:
        """The chain of steps from the original image to the final one (explored branches left out)."""
        # A tool that changed nothing has output == input (ids are content hashes): it is no link.
        by_output = {s.output_id: s for s in self.steps if s.error is None and s.output_id != s.input_id}
        chain, current, seen = [], self.final_id, set()
        while current != self.original_id and current in by_output and current not in seen:
            seen.add(current)
            step = by_output[current]
            chain.append(step)
            current = step.input_id
        return chain[::-1]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = [s.index for s in self.path()]
        data["tool_calls"] = len(self.steps)
        return data
