"""The policy interface and the registry of policies.

A policy looks at the observation (the original image, the current one, every step so
far) and returns the next tool call or stops. Policies may perceive through the session
(detect degradations, assess quality), but restoration calls go through the agent loop,
which records them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tiragent.agent.actions import Action, Step, Stop
from tiragent.agent.session import ActionSpace, ToolSession
from tiragent.errors import TirAgentError, ToolNotFoundError, did_you_mean
from tiragent.tasks import Task

# The usual restoration order when nothing better is known: light and noise first, resolution last.
FIXED_ORDER: list[str] = [Task.LOWLIGHT, Task.DENOISE, Task.DEJPEG, Task.DERAIN, Task.DEHAZE, Task.DEFOCUS_DEBLUR, Task.MOTION_DEBLUR, Task.SR]

NO_REFERENCE_METRICS = ["niqe", "piqe"]


@dataclass
class Observation:
    original_id: str
    current_id: str
    space: ActionSpace
    session: ToolSession
    steps: list[Step] = field(default_factory=list)
    reference_id: str | None = None
    """The clean image, known only in evaluation (the oracle uses it)."""
    known_tasks: list[str] | None = None
    """The tasks a benchmark says are needed, known only in evaluation."""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    """No-reference metrics of each image seen so far, by image id."""
    original_size: tuple[int, int] = (0, 0)
    """Width and height of the original image."""

    @property
    def last(self) -> Step | None:
        return self.steps[-1] if self.steps else None


class Policy(Protocol):
    name: str
    default_max_steps: int

    async def reset(self, observation: Observation) -> None: ...

    async def next(self, observation: Observation) -> Action | Stop: ...


def quality_score(metrics: dict[str, float]) -> float:
    """A no-reference score in [0, 1], higher is better: the mean of normalised NIQE and PIQE."""
    from tiragent.eval.metrics import normalized

    values = [normalized(k, metrics[k]) for k in NO_REFERENCE_METRICS if k in metrics]
    return sum(values) / len(values) if values else 0.0


def schedule(tasks: list[str]) -> list[str]:
    return sorted(tasks, key=lambda t: FIXED_ORDER.index(t) if t in FIXED_ORDER else len(FIXED_ORDER))


async def detected_tasks(observation: Observation, threshold: float = 0.5) -> list[str]:
    probabilities = await observation.session.detect(observation.original_id)
    return [t for t, p in probabilities.items() if p > threshold and t in observation.space.models]


PolicyFactory = Callable[..., Policy]
POLICIES: dict[str, PolicyFactory] = {}


def register_policy(name: str) -> Callable[[PolicyFactory], PolicyFactory]:
    def decorator(factory: PolicyFactory) -> PolicyFactory:
        POLICIES[name] = factory
        return factory

    return decorator


def policy_options(spec: str) -> tuple[str, dict[str, object]]:
    """``NAME?key=value&key=value`` split into the name and its options, each value read as JSON where it parses
    (``0.2``, ``true``) and as text otherwise (``rank``): ``tir?decode=rank&gate=0.2``."""
    import json

    name, _, query = spec.partition("?")
    options: dict[str, object] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TirAgentError(f"policy {spec!r}: option {item!r} is not key=value")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return name, options


def create_policy(spec: str, **options: object) -> Policy:
    """A built-in policy by name, or a Qwen-VL policy from a checkpoint folder (or hub id); options after ``?``
    (``policy_options``) go to its constructor."""
    from tiragent.agent import policies  # noqa: F401 - registers the built-in policies

    name, given = policy_options(spec)
    try:
        policy = _create(name, {**given, **options})
    except TypeError as err:
        if given and "unexpected keyword" in str(err):
            raise TirAgentError(f"policy {name!r} takes no option among {', '.join(given)} ({err})") from None
        raise
    if given:
        policy.name = spec  # its options are part of its name in every table
    return policy


def _create(spec: str, options: dict[str, object]) -> Policy:
    if spec in POLICIES:
        return POLICIES[spec](**options)
    if Path(spec).exists() or "/" in spec:
        return POLICIES["qwen"](checkpoint=spec, **options)
    raise ToolNotFoundError(f"unknown policy {spec!r}: {did_you_mean(spec, list(POLICIES))}, or a checkpoint folder")
