"""The tool registry: one entry per restoration tool, keyed ``"<task>.<name>"``.

A classical tool is a function ``f(image, params) -> image`` decorated with
``register_tool``; a learned tool is a builder ``() -> nn.Module`` decorated with
``register_torch_tool`` and a ``ModelDescriptor``. The docstring becomes the description
that the policy and assistants read, the pydantic ``params`` model the typed schema.
Tool modules are imported on first use of the registry, from the explicit list in
``tiragent.server.tools``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from tiragent.errors import ParameterError, ToolNotFoundError, did_you_mean
from tiragent.tasks import TASK_NAMES, Task, is_task

if TYPE_CHECKING:
    from torch import nn


class Cost(StrEnum):
    """Rough price of one call on a 512x512 image on a 2-core CPU."""

    LOW = "low"  # under 50 ms
    MEDIUM = "medium"  # under 500 ms
    HIGH = "high"  # more


class ToolParams(BaseModel):
    """Base of every tool's parameter model: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(ToolParams):
    pass


Tiling = Literal["supported", "discouraged", "internal"]


@dataclass(frozen=True)
class ModelDescriptor:
    """What the pool must know to run an ``nn.Module``: spandrel-style, typed, no option dicts."""

    scale: int = 1
    """Output size / input size."""
    multiple_of: int = 1
    """Input height and width are padded (reflect) to a multiple of this."""
    min_size: int = 1
    """Inputs smaller than this on either side are padded up to it."""
    square: bool = False
    """Inputs are padded (reflect) to a square."""
    tile_size: int | None = 512
    """Inputs larger than this on either side are cut into overlapping tiles of this size; None never tiles."""
    tile_overlap: int = 32
    tiling: Tiling = "supported"
    """The architecture's tiling advice (spandrel's ``ModelTiling``): "discouraged" tiles only very large inputs,
    "internal" never tiles (the model tiles itself, or needs the whole frame)."""
    supports_half: bool = True
    """Whether fp16 inference is safe on an accelerator."""
    supports_bfloat16: bool = True
    """Whether bf16 inference is safe on an accelerator (preferred over fp16 where the GPU has it)."""
    max_batch_size: int = 16
    """Largest batch on an accelerator; the pool caps it lower on a CPU."""
    cpu_step: bool = False
    """The model splits its work: ``module.device_step(x)`` runs tensors on the device and returns an estimate per
    image (an ``N x K`` tensor); ``module.cpu_step(image, estimate)`` makes the output from it on a CPU thread, so
    numpy work (deconvolution, say) never holds up the device that other tools share."""

    def __post_init__(self) -> None:
        if self.tiling == "internal" and self.tile_size is not None:
            raise ValueError("a model that tiles internally must not be tiled: tile_size must be None")

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """The input size the model needs for a ``height x width`` image: minimum, multiple-of and square rules."""
        h, w = (-(-max(side, self.min_size) // self.multiple_of) * self.multiple_of for side in (height, width))
        if self.square:
            h = w = max(h, w)
        return h, w


Device = Literal["cpu", "accelerator"]


@dataclass(frozen=True)
class ToolSpec:
    task: Task
    name: str
    description: str
    cost: Cost
    params: type[ToolParams]
    device: Device
    run: Callable[[np.ndarray, Any], np.ndarray] | None = None
    build: Callable[[], nn.Module] | None = None
    descriptor: ModelDescriptor | None = None
    concurrency: int | None = None
    """Most calls of this tool that may run at once (None: as many as the pool allows)."""
    isolated: bool = False
    """Run in a worker process, so that a crash of its native code fails only that call."""

    @property
    def key(self) -> str:
        return f"{self.task}.{self.name}"

    @property
    def is_torch(self) -> bool:
        return self.build is not None

    def validate(self, params: dict[str, Any] | ToolParams | None) -> ToolParams:
        """Check parameters against the schema; raises ParameterError naming the bad field."""
        if isinstance(params, self.params):
            return params
        try:
            return self.params.model_validate(params or {})
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}"
                + (f" (got {e['input']!r})" if e["type"] != "missing" and not isinstance(e["input"], dict) else "")
                for e in err.errors()
            )
            raise ParameterError(f"{self.key}: invalid parameters: {problems}") from None

    def schema(self) -> dict[str, Any]:
        return self.params.model_json_schema()

    def output_scale(self, params: ToolParams) -> int:
        if self.descriptor is not None:
            return self.descriptor.scale
        return int(getattr(params, "scale", 1))


_REGISTRY: dict[str, ToolSpec] = {}
_loaded = False


def _describe(obj: Callable[..., Any]) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _add(spec: ToolSpec, *, replace: bool = False) -> ToolSpec:
    if not replace and spec.key in _REGISTRY:
        raise ValueError(f"a tool named {spec.key!r} is already registered")
    if not spec.description:
        raise ValueError(f"tool {spec.key!r} has no description (write a docstring)")
    _REGISTRY[spec.key] = spec
    return spec


def register_tool(
    task: Task | str,
    name: str,
    *,
    cost: Cost | str,
    params: type[ToolParams] = NoParams,
    concurrency: int | None = None,
    isolated: bool = False,
) -> Callable[[Callable[[np.ndarray, Any], np.ndarray]], Callable[[np.ndarray, Any], np.ndarray]]:
    """Register a classical tool ``f(image, params) -> image`` that runs on CPU threads.

    ``concurrency`` caps how many calls of it run at once (1 for native code that is not
    thread-safe); ``isolated`` runs it in a worker process, where a crash of native code fails
    only that call (``fn`` must then be a module-level function: it travels by reference).
    """
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"tool {task}.{name}: concurrency must be at least 1, not {concurrency}")

    def decorator(fn: Callable[[np.ndarray, Any], np.ndarray]) -> Callable[[np.ndarray, Any], np.ndarray]:
        spec = ToolSpec(
            task=Task(task), name=name, description=_describe(fn), cost=Cost(cost), params=params, device="cpu", run=fn,
            concurrency=concurrency, isolated=isolated,
        )  # fmt: skip
        _add(spec)
        return fn

    return decorator


def register_torch_tool(
    task: Task | str,
    name: str,
    *,
    cost: Cost | str,
    descriptor: ModelDescriptor = ModelDescriptor(),
    params: type[ToolParams] = NoParams,
    description: str | None = None,
    replace: bool = False,
) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Register a learned tool from a builder ``() -> nn.Module`` (weights loaded inside).

    The module maps a ``N x 3 x H x W`` float batch in [0, 1] to ``N x 3 x sH x sW``;
    non-empty ``params`` are passed to ``forward`` as keyword arguments.
    """

    def decorator(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        _add(
            ToolSpec(
                task=Task(task),
                name=name,
                description=description or _describe(build),
                cost=Cost(cost),
                params=params,
                device="accelerator",
                build=build,
                descriptor=descriptor,
            ),
            replace=replace,
        )
        return build

    return decorator


def unregister(key: str) -> None:
    _REGISTRY.pop(key, None)


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    from tiragent.server.tools import TOOL_MODULES

    for module in TOOL_MODULES:
        importlib.import_module(f"tiragent.server.tools.{module}")
    _loaded = True


def get_tool(key: str, name: str | None = None) -> ToolSpec:
    """Look a tool up by ``"task.name"`` or by ``(task, name)``."""
    _ensure_loaded()
    if name is not None:
        key = f"{key}.{name}"
    if key not in _REGISTRY:
        task = key.split(".", 1)[0]
        if not is_task(task):
            raise ToolNotFoundError(f"unknown task {task!r}: {did_you_mean(task, list(TASK_NAMES))}")
        names = [s.name for s in _REGISTRY.values() if s.task == task]
        raise ToolNotFoundError(f"unknown tool {key!r}: task {task!r} has {', '.join(sorted(names))}")
    return _REGISTRY[key]


def list_tools(task: Task | str | None = None) -> list[ToolSpec]:
    """Every registered tool, or those of one task, sorted by key."""
    _ensure_loaded()
    if task is not None and not is_task(task):
        raise ToolNotFoundError(f"unknown task {task!r}: {did_you_mean(str(task), list(TASK_NAMES))}")
    specs = sorted(_REGISTRY.values(), key=lambda s: s.key)
    return [s for s in specs if task is None or s.task == Task(task)]
