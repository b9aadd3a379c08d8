"""One conversation format for the Qwen-VL policy at inference, for SFT data and for RL rollouts.

An episode is the original photo, then for each step the call the policy made and the tool's
result, then STOP. This module turns it into chat messages for ``agent/templates/qwen_vl_tools.jinja``
and the tool schemas from the server's ``list_tools`` (through ``ActionSpace``), so that what a
policy is trained on is, token for token, what it is given when it acts.

What the policy sees of an image (``ViewConfig``): a small whole-image view, and beside it a
crop at native resolution, aligned to the 16-pixel grid, because downscaling a photo to a few
hundred pixels averages away the evidence of noise and of the 8x8 JPEG blocks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiragent.agent.session import ActionSpace, ToolSession
from tiragent.errors import TirAgentError

SYSTEM = (
    "You restore degraded photos one step at a time. Look at the image, call one restoration tool, look at the "
    "result, and go on until the photo is clean; then answer STOP."
)
SYSTEM_SHORT = "Restore the photo one tool call at a time; answer STOP when it is clean."
TASK_PROMPT = "Restore this photo."
VIEWS_FILE = "tir_agent_views.json"
"""Beside SFT data and inside a policy's folder: the views it was trained with, so it acts with the same."""
GRID = 16
"""Crops start on this grid: the 8x8 JPEG blocks and 16x16 chroma-subsampled macroblocks stay aligned."""


@dataclass(frozen=True)
class ViewConfig:
    """What the policy is shown of each image."""

    whole: int = field(default=256, metadata={"help": "Longest side of the whole-image view (downscaled, area interpolation)."})
    crop: int = field(
        default=128, metadata={"help": "Side of the native-resolution centre crop shown beside it, on the 16-px grid (0: none)."}
    )
    short_prompt: bool = field(
        default=False, metadata={"help": "Short system prompt and tool list (each tool's name, models and parameter names only), for small policies."}
    )
    perception: bool = field(
        default=False,
        metadata={"help": "Add the server's detect_degradations reading of the photo to the task prompt, as text (for small policies, whose own vision is weak)."},
    )
    detector: str = field(
        default="",
        metadata={"help": "Which detector gives that reading: 'logistic', 'learned', or '' (the server's own); a policy reads with the one it was trained with."},
    )
    fixed_size: bool = field(
        default=False,
        metadata={"help": "Every view at its fixed size (small images upscaled, the crop always shown), so that an image's size is not its number of visual tokens."},
    )

    def __post_init__(self) -> None:
        if self.detector not in ("", "logistic", "learned"):
            raise TirAgentError(f"views: detector {self.detector!r} is not 'logistic', 'learned' or '' (the server's)")


def write_views(folder: str | Path, views: ViewConfig) -> None:
    (Path(folder) / VIEWS_FILE).write_text(json.dumps(asdict(views)))


def read_views(folder: str | Path) -> ViewConfig | None:
    """The views saved in ``folder``, or None (a hub id, or a checkpoint this project did not train)."""
    path = Path(folder) / VIEWS_FILE
    return ViewConfig(**json.loads(path.read_text())) if path.is_file() else None


TOOLS_FILE = "tir_agent_tools.json"
"""Inside a policy's folder: the tool list it was trained with (the chat-template schemas of its SFT data), so that it
is shown, and chooses among, the same tools when the server offers more (a model added later) or lists them otherwise."""


def write_trained_tools(folder: str | Path, tools: list[dict[str, Any]]) -> None:
    (Path(folder) / TOOLS_FILE).write_text(json.dumps(tools, indent=1))


def read_trained_models(folder: str | Path) -> dict[str, list[str]] | None:
    """{task: models} of the tool list saved in ``folder`` (short schemas list ``models``; full ones the ``model``
    parameter's choices), or None where there is none (a hub id, or a policy trained before the file existed)."""
    path = Path(folder) / TOOLS_FILE
    if not path.is_file():
        return None
    models = {}
    for tool in json.loads(path.read_text()):
        function = tool["function"]
        names = function.get("models") or function.get("parameters", {}).get("properties", {}).get("model", {}).get("enum", [])
        models[function["name"]] = list(names)
    return models


def crop_window(width: int, height: int, size: int) -> tuple[int, int, int, int] | None:
    """``(left, top, width, height)`` of the centre crop of side ``size`` on the grid, or None when the image is not larger."""
    if size <= 0 or (width <= size and height <= size):
        return None
    w, h = min(size, width), min(size, height)
    left = max(0, ((width - w) // 2) // GRID * GRID)
    top = max(0, ((height - h) // 2) // GRID * GRID)
    return left, top, w, h


ViewRequest = tuple[tuple[int, int, int, int] | None, int | None, int | None]
"""One view: the window of the image (None: all of it), the longest side to downscale to (None: native), and the
exact longest side to bring it to afterwards (None: as it comes)."""


def view_requests(width: int, height: int, views: ViewConfig) -> list[ViewRequest]:
    """The views the policy sees of a ``width`` x ``height`` image: the whole view, then the native crop (when it adds
    detail; with ``fixed_size`` always, each at its fixed size)."""
    window = crop_window(width, height, views.crop)
    if views.fixed_size:
        return [(None, views.whole, views.whole), *([(window, None, views.crop)] if views.crop > 0 else [])]
    return [(None, views.whole, None), *([(window, None, None)] if window is not None and max(width, height) > views.whole else [])]


async def fetch_views(session: ToolSession, image_id: str, width: int, height: int, views: ViewConfig) -> list[np.ndarray]:
    """The images the policy sees of one stored image (``view_requests``); the server crops and downscales."""
    shown = []
    for window, max_side, side in view_requests(width, height, views):
        image = await session.fetch(image_id, max_side=max_side, window=window)
        shown.append(_longest_side(image, side) if side else image)
    return shown


def local_views(image: np.ndarray, views: ViewConfig) -> list[np.ndarray]:
    """``fetch_views`` of an image held here (RGB in [0, 1]), as 8-bit RGB: what training outside a session shows."""
    shown = []
    for window, max_side, side in view_requests(image.shape[1], image.shape[0], views):
        part = image if window is None else image[window[1] : window[1] + window[3], window[0] : window[0] + window[2]]
        if max_side is not None and max(part.shape[:2]) > max_side:
            part = _longest_side(part, max_side)
        part = _longest_side(part, side) if side else part
        shown.append(np.round(np.clip(part, 0, 1) * 255).astype(np.uint8))
    return shown


def _longest_side(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` with its longest side exactly ``side`` (bicubic up, area down, clipped)."""
    import cv2

    h, w = image.shape[:2]
    if max(h, w) == side:
        return image
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    return np.clip(cv2.resize(image, size, interpolation=interpolation), 0, 1)


def tool_schemas(space: ActionSpace, short: bool = False) -> list[dict[str, Any]]:
    """The task tools as chat-template function schemas, from the server's own schemas; the policy always acts on
    the current image, so ``image_id`` is left out. ``short``: the name, the models and the parameters' names only
    (``{"name": ..., "models": [...], "params": [...]}``), a fraction of the tokens."""
    schemas = []
    for task in space.tasks:
        props = {k: v for k, v in space.schemas[task].get("properties", {}).items() if k != "image_id"}
        function: dict[str, Any]
        if short:
            function = {"name": task, "models": space.models[task], "params": [k for k in props if k != "model"]}
        else:
            function = {"name": task, "description": space.descriptions[task].split("\n")[0], "parameters": {"type": "object", "properties": props}}
        schemas.append({"type": "function", "function": function})
    return schemas


def images_part(images: list[Any]) -> list[dict[str, Any]]:
    return [{"type": "image", "image": image} for image in images]


def system_turn(short: bool = False) -> dict[str, Any]:
    return {"role": "system", "content": SYSTEM_SHORT if short else SYSTEM}


def task_turn(images: list[Any], perceived: str = "") -> dict[str, Any]:
    text = f"{TASK_PROMPT}\n{perceived}" if perceived else TASK_PROMPT
    return {"role": "user", "content": [*images_part(images), {"type": "text", "text": text}]}


SEVERITY_WORDS = {"noise": "sigma", "motion": "length", "defocus": "radius", "jpeg": "quality", "lowres": "scale"}


def perception_text(found: dict[str, Any], floor: float = 0.2) -> str:
    """The detector's answer (``detect_degradations``' structured content) in a few words: the tasks it finds at least
    ``floor`` likely, most likely first, each with its probability and the strength the detector gives, e.g.
    ``detector: denoise 0.9 (sigma 24), dejpeg 0.4``; ``detector: nothing`` when none reaches the floor."""
    from tiragent.tasks import TASK_OF_DEGRADATION

    severity = {TASK_OF_DEGRADATION[k]: (SEVERITY_WORDS.get(k, k), v) for k, v in found.get("severity", {}).items()}
    likely = sorted(((p, t) for t, p in found["tasks"].items() if p >= floor), reverse=True)
    parts = []
    for p, task in likely:
        word, value = severity.get(task, ("", None))
        parts.append(f"{task} {p:.1f}" + (f" ({word} {value:.0f})" if value is not None else ""))
    return "detector: " + (", ".join(parts) if parts else "nothing")


async def perceived(session: ToolSession, image_id: str, views: ViewConfig) -> str:
    """What the task prompt says of the photo besides the images: the detector's reading, when ``views.perception``."""
    return perception_text(await session.perceive(image_id, views.detector or None)) if views.perception else ""


def call_turn(task: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The assistant's tool call; its content is an empty list (an empty string would add a newline in training
    that generation never produces)."""
    return {"role": "assistant", "content": [], "tool_calls": [{"type": "function", "function": {"name": task, "arguments": arguments}}]}


def result_turn(text: str, images: list[Any]) -> dict[str, Any]:
    return {"role": "tool", "content": [{"type": "text", "text": text}, *images_part(images)]}


def error_turn(error: str) -> dict[str, Any]:
    return {"role": "tool", "content": [{"type": "text", "text": f"error: {error}"}]}


def stop_turn() -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": "STOP"}]}


def result_text(task: str, model: str, metrics: dict[str, float]) -> str:
    """What a tool's result says in words: no timings, so that the same step reads the same in every run."""
    scores = ", ".join(f"{k} {v:.2f}" for k, v in sorted(metrics.items()))
    return f"{task}.{model} done; {scores}" if scores else f"{task}.{model} done"


def join_images(messages: list[dict[str, Any]], images: list[Any]) -> list[dict[str, Any]]:
    """The inverse of ``split_images``: each image placeholder filled with the next image, in order."""
    remaining = iter(images)
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            message = {**message, "content": [{"type": "image", "image": next(remaining)} if p.get("type") == "image" else p for p in content]}
        out.append(message)
    return out


def split_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Messages with image placeholders and the images in order, as trl's datasets store them."""
    images: list[Any] = []
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    images.append(part["image"])
                    parts.append({"type": "image"})
                else:
                    parts.append(part)
            message = {**message, "content": parts}
        out.append(message)
    return out, images


def result_continuation(processor: Any, tools: list[dict[str, Any]], turn: dict[str, Any], short: bool = False) -> str:
    """The text that follows a generated tool call (which ends on ``<|im_end|>``) when ``turn`` answers it: the rest of
    that line, the tool's turn, and the next generation prompt. Taken from the template itself, by rendering a
    conversation with and without the turn, so RL rollouts extend their tokens exactly as the template renders."""
    head = [system_turn(short), {"role": "user", "content": TASK_PROMPT}, call_turn("x", {})]
    before = processor.apply_chat_template(head, tools=tools, tokenize=False)
    after = processor.apply_chat_template([*head, turn], tools=tools, tokenize=False, add_generation_prompt=True)
    end = before.rindex("<|im_end|>") + len("<|im_end|>")
    if not after.startswith(before[:end]):
        raise ValueError("the chat template renders a past turn differently once a tool result follows it")
    return after[end:]
