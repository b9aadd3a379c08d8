"""The agent's side of MCP: one client session to the tool server, and the action space it lists.

The agent and training reach the tools only through MCP, never by importing server
code, so that assistants, the CLI and RL share one action space.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tiragent.agent.actions import Action
from tiragent.errors import RETRY_AFTER_META, TirAgentError
from tiragent.images import decode_image, encode_image
from tiragent.tasks import TASK_TOOL_META


class ServerError(TirAgentError, RuntimeError):
    """The tool server went away or the connection broke."""


class ToolCallError(TirAgentError, RuntimeError):
    """The server answered a call with a tool error (bad input, a failing tool)."""


@dataclass(frozen=True)
class ToolResult:
    image_id: str
    width: int
    height: int
    params: dict[str, Any]
    seconds: float
    queue_wait_seconds: float


@dataclass(frozen=True)
class ModelFacts:
    """What the server says of one model of a task, as data (the task tool's ``_meta``)."""

    cost: str
    device: str
    learned: bool
    scale: int | None
    """Output size / input size; None when the ``scale`` argument sets it."""
    default: bool
    params: tuple[str, ...]


@dataclass(frozen=True)
class ActionSpace:
    """Restoration tasks and their models, with each model's facts, as the server lists them."""

    models: dict[str, list[str]]
    defaults: dict[str, str]
    descriptions: dict[str, str]
    schemas: dict[str, dict[str, Any]]
    facts: dict[str, dict[str, ModelFacts]]

    def cost(self, task: str, model: str) -> str:
        return self.facts[task][model].cost

    @property
    def tasks(self) -> list[str]:
        return list(self.models)

    def restricted(self, models: dict[str, list[str]]) -> ActionSpace:
        """The tasks and models of ``models`` (in its order) that this space has, nothing else: the action space a
        policy was trained on, as far as the server still offers it. A task keeps the server's default where that is
        among them, else its first; a task schema's ``model`` choices are narrowed alike."""
        kept = {t: [m for m in ms if m in self.models.get(t, ())] for t, ms in models.items()}
        kept = {t: ms for t, ms in kept.items() if ms}
        schemas = {}
        for task, names in kept.items():
            schema = self.schemas[task]
            model = schema.get("properties", {}).get("model")
            if isinstance(model, dict) and "enum" in model:
                schema = {**schema, "properties": {**schema["properties"], "model": {**model, "enum": [m for m in model["enum"] if m in names]}}}
            schemas[task] = schema
        return ActionSpace(
            models=kept,
            defaults={t: self.defaults[t] if self.defaults[t] in ms else ms[0] for t, ms in kept.items()},
            descriptions={t: self.descriptions[t] for t in kept},
            schemas=schemas,
            facts={t: {m: self.facts[t][m] for m in ms} for t, ms in kept.items()},
        )

    def check(self, action: Action) -> None:
        if action.task not in self.models:
            raise TirAgentError(f"unknown task {action.task!r}; the server offers {', '.join(self.models)}")
        if action.model not in self.models[action.task]:
            raise TirAgentError(f"task {action.task!r} has no model {action.model!r}; it has {', '.join(self.models[action.task])}")


class ToolSession:
    """Typed calls over one MCP client session."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._space: ActionSpace | None = None

    busy_retries = 8
    """How often a call the server answers 'busy' is retried, after the wait the server suggests."""

    async def _call(self, tool: str, arguments: dict[str, Any]) -> Any:
        for attempt in range(self.busy_retries + 1):
            try:
                result = await self.client.call_tool(tool, arguments)
            except Exception as err:  # transport failures: the server died or the connection broke
                raise ServerError(f"the tool server failed during {tool}: {type(err).__name__}: {err}") from err
            retry_after = (result.meta or {}).get(RETRY_AFTER_META) if result.is_error else None
            if retry_after is None or attempt == self.busy_retries:
                break
            await anyio.sleep(float(retry_after))
        if result.is_error:
            text = " ".join(getattr(block, "text", "") for block in result.content)
            raise ToolCallError(text or f"{tool} failed")
        return result

    async def action_space(self) -> ActionSpace:
        if self._space is None:
            tools = (await self.client.list_tools()).tools
            models, defaults, descriptions, schemas, facts = {}, {}, {}, {}, {}
            for tool in tools:
                meta = (tool.meta or {}).get(TASK_TOOL_META)
                if meta is None:  # a restoration task is a tool that carries the task facts
                    continue
                models[tool.name] = list(meta["models"])
                defaults[tool.name] = meta["default"]
                descriptions[tool.name] = tool.description or ""
                schemas[tool.name] = tool.input_schema
                facts[tool.name] = {name: ModelFacts(**{**f, "params": tuple(f["params"])}) for name, f in meta["models"].items()}
            self._space = ActionSpace(models, defaults, descriptions, schemas, facts)
        return self._space

    async def load(self, image: np.ndarray) -> str:
        data = base64.b64encode(encode_image(image, "png", transport=True)).decode()
        return (await self._call("load_image", {"data": data})).structured_content["image_id"]

    async def fetch(self, image_id: str, max_side: int | None = None, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """The image (or its ``window``: left, top, width, height), at full resolution or with its longest side at
        most ``max_side``; the server crops and downscales, so only what is needed travels."""
        arguments: dict[str, Any] = {"image_id": image_id, "format": "png"}
        if max_side is not None:
            arguments["max_side"] = max_side
        if window is not None:
            arguments["window"] = list(window)
        result = await self._call("get_image", arguments)
        return decode_image(base64.b64decode(result.content[0].data), max_pixels=1 << 40, name=image_id)

    async def apply(self, action: Action, image_id: str) -> ToolResult:
        arguments = {"image_id": image_id, "model": action.model, **action.params}
        info = (await self._call(action.task, arguments)).structured_content
        return ToolResult(info["image_id"], info["width"], info["height"], info["params"], info["seconds"], info["queue_wait_seconds"])

    async def assess(self, image_id: str, reference_id: str | None = None, metrics: list[str] | None = None) -> dict[str, float]:
        arguments: dict[str, Any] = {"image_id": image_id}
        if reference_id:
            arguments["reference_id"] = reference_id
        if metrics:
            arguments["metrics"] = metrics
        return (await self._call("assess_quality", arguments)).structured_content["metrics"]

    async def detect(self, image_id: str) -> dict[str, float]:
        """Probability that each degradation is present, keyed by the task that removes it."""
        return (await self.perceive(image_id))["tasks"]

    async def perceive(self, image_id: str, detector: str | None = None) -> dict[str, Any]:
        """The detector's whole answer: ``tasks`` (probability per task), ``severity`` (per degradation), ``detector``.
        ``detector``: 'logistic' or 'learned' (None: the server's own choice)."""
        arguments = {"image_id": image_id, **({"detector": detector} if detector else {})}
        return (await self._call("detect_degradations", arguments)).structured_content


MAX_EVENT_BYTES = 1 << 30
"""Largest server-sent event this client takes (an image of about 300 megapixels as base64 PNG)."""


@asynccontextmanager
async def open_session(server: str | None = None, *, device: str = "auto") -> AsyncIterator[ToolSession]:
    """A session on ``server`` (a streamable-HTTP URL), or on a stdio server this starts itself."""
    if server:  # full-resolution images travel in one server-sent event: past the SDK's default limit of 1 MiB
        target: Any = streamable_http_client(server, max_sse_event_size=MAX_EVENT_BYTES)
    else:
        target = StdioServerParameters(command=sys.executable, args=["-m", "tiragent.cli", "serve", "--device", device, "--preview-size", "0"])
    try:
        client = Client(target)
        await client.__aenter__()
    except Exception as err:
        raise ServerError(f"cannot reach the tool server ({server or 'stdio'}): {type(err).__name__}: {err}") from err
    try:
        yield ToolSession(client)
    finally:
        try:
            await client.__aexit__(None, None, None)
        except Exception:  # noqa: BLE001 - a dead server is reported by the call that met it
            pass
