"""One MCP tool per restoration task, with the concrete model as an enum argument.

The (task, model) pair is the action space shared by assistants, the agent and RL
training. A task tool's arguments are ``image_id``, ``model`` and the union of its
models' parameters, each optional: omitted parameters take the chosen model's default,
and a parameter that the chosen model does not have is an error that says which
models have it. A ``scale`` the default model cannot give (super-resolution's default is the x4
network) picks the task's preferred model that gives it instead (the x2 network for ``scale=2``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic.fields import FieldInfo

from tiragent.errors import ParameterError, ToolNotFoundError
from tiragent.server.registry import Cost, ToolSpec, list_tools
from tiragent.tasks import TASK_TOOL_META, Task

TASK_SUMMARIES: dict[Task, str] = {
    Task.DENOISE: "Remove sensor noise (Gaussian or Poisson grain).",
    Task.MOTION_DEBLUR: "Remove motion blur (streaked, directional smear from camera or subject motion).",
    Task.DEFOCUS_DEBLUR: "Remove defocus blur (uniformly soft, out-of-focus image).",
    Task.DERAIN: "Remove rain streaks (thin bright slanted lines).",
    Task.DEHAZE: "Remove haze or fog (washed-out contrast growing with distance).",
    Task.DEJPEG: "Remove JPEG compression artefacts (8x8 blocking, ringing, colour bleeding).",
    Task.SR: "Upscale a low-resolution image (x2 or x4); the result is larger than the input.",
    Task.LOWLIGHT: "Brighten an underexposed, dark image.",
}


DEFAULT_MODELS: dict[Task, tuple[str, ...]] = {
    # Each task's default model, then the fallbacks when a model is missing (a damaged weights file):
    # the best models that are not high-cost, by docs/benchmarks/tools_mcmaster.md (McMaster) and
    # docs/benchmarks/toolbox.md (CBSD68). On the dev benchmark the fixed policy gained with `hazenet`
    # (20.99 dB against 20.61 with `cap`). Super-resolution: the x4 network (the benchmarks' and the
    # protocol's factor), 1.46 dB over back-projection on the protocol's x4 and 1.86 on albumentations'
    # (docs/benchmarks/tools_*_sr_ensemble.md); a `scale` of 2 picks `srnet_x2` (`scale_default`), and
    # the classical tools, which take either scale, follow. Past the list: the first model that is not
    # high-cost. Low light: the global tone curve beats the UNet on McMaster by 0.89 dB
    # (protocol) and 3.46 dB (albumentations), at a ninth of its time (docs/benchmarks/tools_*_curve.md).
    Task.DENOISE: ("unet", "nlm"),
    Task.MOTION_DEBLUR: ("kernel_wiener", "unet", "wiener"),
    Task.DEFOCUS_DEBLUR: ("unet", "wiener"),
    Task.DERAIN: ("unet", "opening"),
    Task.DEHAZE: ("hazenet", "unet", "dcp"),
    Task.DEJPEG: ("unet", "bilateral"),
    Task.SR: ("srnet_x4", "srnet_x2", "backprojection", "lanczos"),
    Task.LOWLIGHT: ("curve", "unet", "retinex"),
}


def preference(task: Task, specs: list[ToolSpec]) -> list[str]:
    """The registered models that may be the task's default, best first: ``DEFAULT_MODELS``' order, then the others
    that are not high-cost."""
    names = [s.name for s in specs]
    preferred = [n for n in DEFAULT_MODELS.get(task, ()) if n in names]
    return preferred + [s.name for s in specs if s.name not in preferred and s.cost != Cost.HIGH]


def default_model(task: Task, specs: list[ToolSpec]) -> str:
    """The task's default among the models that are registered now."""
    if not specs:
        raise ToolNotFoundError(f"task {task.value!r} has no model registered")
    return (preference(task, specs) or [specs[0].name])[0]


def gives_scale(spec: ToolSpec, scale: Any) -> bool:
    """Whether ``spec`` can produce the output ``scale`` asked: it takes a ``scale`` argument, or its fixed scale is it."""
    if "scale" in spec.params.model_fields:
        return True
    return spec.descriptor is not None and spec.descriptor.scale == scale


def scale_default(task: Task, specs: list[ToolSpec], scale: Any) -> str | None:
    """The task's preferred model that gives ``scale`` (None where none does): the default when ``scale`` is asked."""
    by_name = {s.name: s for s in specs}
    return next((n for n in preference(task, specs) if gives_scale(by_name[n], scale)), None)


def model_facts(spec: ToolSpec, default: str) -> dict[str, Any]:
    """What a client needs to know of one model, as data (the task tool's ``_meta``)."""
    if spec.descriptor is not None:
        scale: int | None = spec.descriptor.scale
    else:
        scale = None if "scale" in spec.params.model_fields else 1  # None: the `scale` argument sets it
    return {
        "cost": spec.cost.value,
        "device": spec.device,
        "learned": spec.is_torch,
        "scale": scale,
        "default": spec.name == default,
        "params": list(spec.params.model_fields),
    }


def _merged_fields(specs: list[ToolSpec]) -> dict[str, tuple[Any, str]]:
    """Union of the models' parameters: name -> (annotation for the schema, description)."""
    merged: dict[str, tuple[Any, str]] = {}
    owners: dict[str, list[tuple[str, FieldInfo]]] = {}
    for spec in specs:
        for name, info in spec.params.model_fields.items():
            owners.setdefault(name, []).append((spec.name, info))
    for name, entries in owners.items():
        first = entries[0][1]
        same = all(repr((i.annotation, i.metadata)) == repr((first.annotation, first.metadata)) for _, i in entries)
        defaults = "; ".join(f"{model}: {'estimated' if i.default is None else repr(i.default)}" for model, i in entries)
        models = ", ".join(model for model, _ in entries)
        description = f"{first.description} Models: {models}. Default when omitted ({defaults})."
        metadata = list(first.metadata) if same else []
        if not same:
            description += " The allowed range depends on the model."
        annotation = Annotated[tuple([first.annotation | None, *metadata, Field(description=description)])]  # type: ignore[operator]
        merged[name] = (annotation, description)
    return merged


def _scale_note(task: Task, specs: list[ToolSpec], default: str) -> str:
    """How the default changes with ``scale``, where it does: ``" (scale 2: srnet_x2)"``."""
    by_name = {s.name: s for s in specs}
    scales = sorted({s.descriptor.scale for s in specs if s.descriptor is not None and s.descriptor.scale > 1})
    other = [(k, scale_default(task, specs, k)) for k in scales if not gives_scale(by_name[default], k)]
    return "".join(f" (scale {k}: {name})" for k, name in other if name)


def task_tool_description(task: Task, specs: list[ToolSpec]) -> str:
    lines = [TASK_SUMMARIES[task], "", "Models:"]
    lines += [f"- {s.name} ({s.cost.value} cost): {s.description}" for s in specs]
    lines += ["", "Returns the new image's id, its size, timing, and a downscaled preview."]
    return "\n".join(lines)


def build_task_tool(
    task: Task, run: Callable[..., Awaitable[Any]], context_type: type, returns: Any
) -> tuple[Callable[..., Awaitable[Any]], str, dict[str, Any]]:
    """A tool function for ``task`` whose signature is the MCP schema, its description, and its ``_meta``
    (per-model facts under ``TASK_TOOL_META``); the function calls ``run(ctx, spec, image_id, params)``."""
    specs = list_tools(task)
    default = default_model(task, specs)
    specs.sort(key=lambda s: s.name != default)  # the default first, in the enum and the description
    names = tuple(s.name for s in specs)
    by_name = {s.name: s for s in specs}
    merged = _merged_fields(specs)

    async def tool(**kwargs: Any) -> Any:
        ctx = kwargs.pop("ctx")
        image_id = kwargs.pop("image_id")
        model = kwargs.pop("model")
        given = {k: v for k, v in kwargs.items() if v is not None}
        if model == default and "scale" in given and not gives_scale(by_name[model], given["scale"]):
            model = scale_default(task, specs, given["scale"]) or model  # the default of that scale (none: the error below)
        spec = by_name[model]
        if "scale" in given and "scale" not in spec.params.model_fields and gives_scale(spec, given["scale"]):
            del given["scale"]  # a fixed-scale model asked for its own scale
        foreign = sorted(set(given) - set(spec.params.model_fields))
        if foreign:
            hints = "; ".join(
                f"{k} belongs to {', '.join(s.name for s in specs if k in s.params.model_fields)}" for k in foreign
            )
            raise ParameterError(f"{task}: model {model!r} takes no parameter {', '.join(map(repr, foreign))} ({hints})")
        return await run(ctx, spec, image_id, given)

    parameters = [
        inspect.Parameter(
            "image_id",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[str, Field(description="Id of the image to restore, from load_image or an earlier step.")],
        ),
        inspect.Parameter(
            "model",
            inspect.Parameter.KEYWORD_ONLY,
            default=default,
            annotation=Annotated[Literal[names], Field(description=f"Which model (tool) to run; see the list above. Default: {default}{_scale_note(task, specs, default)}.")],  # type: ignore[valid-type]
        ),
    ]
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, (annotation, _) in merged.items()
    ]
    parameters.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=context_type))
    # The MCP SDK reads the schema from the signature and finds the context parameter in the annotations.
    tool.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    tool.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}
    tool.__name__ = task.value
    meta = {TASK_TOOL_META: {"task": task.value, "default": default, "models": {s.name: model_facts(s, default) for s in specs}}}
    return tool, task_tool_description(task, specs), meta
