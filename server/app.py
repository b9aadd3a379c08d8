"""The MCP tool server: the toolbox over the Model Context Protocol, on the shared pool.

The lifespan owns the model pool and the image store, once per server, shared by every
session. Images travel by handle: ``load_image`` returns an ``image_id``, every
restoration tool takes one and returns a new one with a downscaled preview.
"""

from __future__ import annotations

import base64
import binascii
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import wraps
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import anyio
import cv2
import numpy as np
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from tiragent import __version__
from tiragent.errors import RETRY_AFTER_META, ImageError, ServerBusyError, TirAgentError
from tiragent.images import check_size, decode_image, encode_image, write_atomically
from tiragent.server.backend import BackendConfig, PoolBackend, open_pool
from tiragent.server.config import ServerConfig
from tiragent.server.metric_cache import MetricCache
from tiragent.server.pool import PoolConfig
from tiragent.server.registry import ToolSpec
from tiragent.server.roots import PathPolicy
from tiragent.server.store import ImageStore
from tiragent.server.strict_tools import strict_tool
from tiragent.server.task_tools import build_task_tool
from tiragent.tasks import TASK_NAMES, Task

INSTRUCTIONS = f"""Image restoration tools. Load an image with load_image (a path inside the allowed
roots, or base64 data) to get an image_id; call one restoration tool per step ({", ".join(TASK_NAMES)}),
each taking an image_id and a model and returning a new image_id with a preview; judge the result with
assess_quality; save the final image with save_image."""


@dataclass
class AppState:
    config: ServerConfig
    pool: PoolBackend
    store: ImageStore
    paths: PathPolicy
    started: float
    metrics: MetricCache = field(default_factory=MetricCache)


class ImageInfo(BaseModel):
    image_id: str = Field(description="Handle of the image, for other tools.")
    width: int
    height: int


class RestoreResult(ImageInfo):
    input_id: str = Field(description="The image the tool was applied to.")
    task: str
    model: str
    params: dict[str, Any] = Field(description="The parameters actually used, defaults included.")
    seconds: float = Field(description="Run time of the tool.")
    queue_wait_seconds: float = Field(description="Time spent waiting for the shared pool.")


class Degradations(BaseModel):
    image_id: str
    present: list[str] = Field(description="Tasks whose degradation is more likely present than not, most likely first.")
    tasks: dict[str, float] = Field(description="Probability that each task's degradation is present.")
    degradations: dict[str, float] = Field(description="The same probabilities keyed by degradation name.")
    severity: dict[str, float] = Field(
        default_factory=dict,
        description="Estimated strength of the present degradations that have one, keyed by degradation: noise sigma (of 255), motion blur length and defocus radius (px), JPEG quality, downscale factor. Empty from the logistic detector.",
    )
    detector: str = Field(default="logistic", description="Which detector answered: 'learned' or 'logistic'.")


class SavedImage(BaseModel):
    image_id: str
    path: str
    bytes: int


class Quality(BaseModel):
    image_id: str
    reference_id: str | None
    metrics: dict[str, float] = Field(description="Metric values in their own units.")
    normalized: dict[str, float] = Field(description="Every metric mapped to [0, 1], higher is better.")


P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Our errors become MCP tool errors (``is_error``) carrying their message."""

    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except ServerBusyError as err:  # the hint as data, beside the message
            return CallToolResult(content=[TextContent(type="text", text=str(err))], is_error=True,
                                  _meta={RETRY_AFTER_META: err.retry_after_s})  # type: ignore[return-value]  # fmt: skip
        except TirAgentError as err:
            raise ToolError(str(err)) from err

    return wrapper


def state_of(ctx: Context) -> AppState:
    return ctx.request_context.lifespan_context


def fit(image: np.ndarray, longest: int | None) -> np.ndarray:
    """The image with its longest side at most ``longest`` (area interpolation), or unchanged."""
    h, w = image.shape[:2]
    if longest is None or max(h, w) <= longest:
        return image
    scale = longest / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


PREVIEW_BUDGET = 700_000
"""Most base64 characters a preview takes: the MCP SDK's HTTP client refuses a server-sent event over 1 MiB by
default, and every tool result carries its preview, so a client that never raised the limit still gets its results."""


def preview_content(image: np.ndarray, size: int, budget: int = PREVIEW_BUDGET) -> list[ImageContent]:
    """A PNG preview of longest side ``size`` (smaller where its base64 would pass ``budget``). Blocking (resizing and
    PNG encoding): call it from a worker thread."""
    if size <= 0:
        return []
    shown = fit(image, size)
    data = base64.b64encode(encode_image(shown, "png", transport=True)).decode()
    if len(data) > budget:  # a stored PNG's size follows its pixels: compress, then shrink to fit
        data = base64.b64encode(encode_image(shown, "png")).decode()
    while len(data) > budget and max(shown.shape[:2]) > 16:
        shown = fit(shown, max(16, int(max(shown.shape[:2]) * min(0.9, (budget / len(data)) ** 0.5))))
        data = base64.b64encode(encode_image(shown, "png")).decode()
    return [ImageContent(type="image", data=data, mime_type="image/png")]


async def with_progress(ctx: Context, after_s: float, label: str, work: Awaitable[R]) -> R:
    """Await ``work``; past ``after_s`` seconds, send a progress notification every second."""
    result: list[R] = []

    async def ticker(scope: anyio.CancelScope) -> None:
        await anyio.sleep(after_s)
        start = time.perf_counter() - after_s
        while not scope.cancel_called:
            elapsed = time.perf_counter() - start
            try:
                await ctx.report_progress(elapsed, None, f"{label}: running for {elapsed:.0f} s")
            except Exception:  # noqa: BLE001 - a client that cannot take progress must not fail the call
                return
            await anyio.sleep(1.0)

    failure: list[Exception] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker, tg.cancel_scope)
        try:
            result.append(await work)
        except Exception as err:  # raised after the group closes, so it is not wrapped in an ExceptionGroup
            failure.append(err)
        finally:
            tg.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return result[0]


async def _run_restoration(ctx: Context, spec: ToolSpec, image_id: str, params: dict[str, Any]) -> Any:
    state = state_of(ctx)
    image = await anyio.to_thread.run_sync(state.store.get, image_id)
    checked = spec.validate(params)
    scale = spec.output_scale(checked)
    check_size(image.shape[1] * scale, image.shape[0] * scale, max_pixels=state.config.max_pixels, name=f"{spec.key} output")
    result = await with_progress(ctx, state.config.progress_after_s, spec.key, state.pool.call(spec, image, checked))
    stored = await anyio.to_thread.run_sync(state.store.put, result.image)
    info = RestoreResult(
        image_id=stored.image_id,
        width=stored.width,
        height=stored.height,
        input_id=image_id,
        task=spec.task.value,
        model=spec.name,
        params=result.params,
        seconds=round(result.run_s, 4),
        queue_wait_seconds=round(result.queue_wait_s, 4),
    )
    summary = f"{spec.key}: {image_id} -> {stored.image_id} ({stored.width}x{stored.height}, {result.run_s:.2f} s)"
    preview = await anyio.to_thread.run_sync(preview_content, result.image, state.config.preview_size)
    content = [TextContent(type="text", text=summary), *preview]
    return CallToolResult(content=content, structured_content=info.model_dump())


def build_server(config: ServerConfig | None = None, pool_config: PoolConfig | None = None, backend: BackendConfig | None = None) -> MCPServer[AppState]:
    """The MCP server: ``config`` for the server itself, ``pool_config`` for the model pool its lifespan owns, ``backend``
    for where that pool runs (the local process by default, or Ray Serve)."""
    config = config or ServerConfig()
    paths = PathPolicy(list(config.roots), config.output_root)
    if config.tools_config is not None:
        from tiragent.server.checkpoints import register_checkpoints

        registered, errors = register_checkpoints(config.tools_config)
        for message in errors:  # a broken checkpoint is reported; the server starts with the other tools
            print(f"tir-agent serve: skipped a checkpoint: {message}", file=sys.stderr)

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        pool = await open_pool(backend, pool_config, config.tools_config)
        store = ImageStore(config.store_memory_mb, config.store_dir, config.store_disk_mb)
        try:
            yield AppState(config=config, pool=pool, store=store, paths=paths, started=time.time())
        finally:
            await pool.aclose()
            store.close()

    tools: list[Tool] = []

    def tool(annotations: ToolAnnotations) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            tools.append(strict_tool(fn, annotations=annotations))
            return fn

        return register

    @tool(annotations=ToolAnnotations(read_only_hint=True))
    @reports_errors
    async def load_image(
        ctx: Context,
        path: Annotated[str | None, Field(description="Path of an image file inside the server's allowed roots (relative paths start at the first root).")] = None,
        data: Annotated[str | None, Field(description="The image file itself, base64-encoded (a data: URL is accepted).")] = None,
    ) -> Annotated[CallToolResult, ImageInfo]:
        """Load an image (PNG, JPEG, TIFF, BMP, WebP; 8 or 16 bit; grayscale and alpha are converted to RGB) and return its image_id and a preview."""
        state = state_of(ctx)
        if (path is None) == (data is None):
            raise ImageError("give exactly one of path or data")
        if path is not None:
            resolved = state.paths.readable(path)
            raw, name = await anyio.to_thread.run_sync(resolved.read_bytes), path
        else:
            payload = data.split(",", 1)[1] if data.startswith("data:") else data  # type: ignore[union-attr]
            try:
                raw = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise ImageError("data is not valid base64") from None
            name = "data"
        image = await anyio.to_thread.run_sync(lambda: decode_image(raw, max_pixels=state.config.max_pixels, name=name))
        stored = await anyio.to_thread.run_sync(state.store.put, image)
        info = ImageInfo(image_id=stored.image_id, width=stored.width, height=stored.height)
        text = TextContent(type="text", text=f"loaded {name} as {stored.image_id} ({stored.width}x{stored.height})")
        preview = await anyio.to_thread.run_sync(preview_content, image, state.config.preview_size)
        return CallToolResult(content=[text, *preview], structured_content=info.model_dump())

    @tool(annotations=ToolAnnotations(read_only_hint=True))
    @reports_errors
    async def get_image(
        ctx: Context,
        image_id: Annotated[str, Field(description="Id of a stored image.")],
        format: Annotated[Literal["png", "jpeg", "webp"], Field(description="Encoding of the returned image.")] = "png",
        max_side: Annotated[
            int | None, Field(ge=8, description="Longest side of the returned image: larger images are downscaled (area interpolation); default: full resolution.")
        ] = None,
        window: Annotated[
            list[int] | None,
            Field(min_length=4, max_length=4, description="[left, top, width, height]: only this part of the image, at native resolution (before max_side)."),
        ] = None,
    ) -> Annotated[CallToolResult, ImageInfo]:
        """Return a stored image, or a window of it, at full resolution or downscaled to the size the client needs; width and height are those of the returned image."""
        state = state_of(ctx)
        image = await anyio.to_thread.run_sync(state.store.get, image_id)
        if window is not None:
            left, top, width, height = window
            h, w = image.shape[:2]
            if left < 0 or top < 0 or width < 8 or height < 8 or left + width > w or top + height > h:
                raise ImageError(f"window {window} is not inside the {w}x{h} image {image_id} (left, top >= 0; width, height >= 8)")
            image = image[top : top + height, left : left + width]
        image = await anyio.to_thread.run_sync(fit, image, max_side)
        data = await anyio.to_thread.run_sync(lambda: base64.b64encode(encode_image(image, format, transport=True)).decode())
        info = ImageInfo(image_id=image_id, width=image.shape[1], height=image.shape[0])
        mime = "image/jpeg" if format == "jpeg" else f"image/{format}"
        return CallToolResult(content=[ImageContent(type="image", data=data, mime_type=mime)], structured_content=info.model_dump())

    @tool(annotations=ToolAnnotations(destructive_hint=False))
    @reports_errors
    async def save_image(
        ctx: Context,
        image_id: Annotated[str, Field(description="Id of a stored image.")],
        path: Annotated[str, Field(description="File to write inside the server's output root; the extension picks the format (.png, .jpg, .webp, .tif).")],
    ) -> SavedImage:
        """Write a stored image to a file inside the output root (the only place the server writes)."""
        state = state_of(ctx)
        target = state.paths.writable(path)
        image = await anyio.to_thread.run_sync(state.store.get, image_id)
        suffix = target.suffix.lower().lstrip(".") or "png"
        if suffix not in {"png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp"}:
            raise ImageError(f"cannot save as {target.suffix!r}: use .png, .jpg, .webp, .tif or .bmp")
        encoded = await anyio.to_thread.run_sync(encode_image, image, suffix)
        await anyio.to_thread.run_sync(write_atomically, target, encoded)  # a server killed mid-save leaves no partial file
        return SavedImage(image_id=image_id, path=str(target), bytes=len(encoded))

    @tool(annotations=ToolAnnotations(read_only_hint=True))
    @reports_errors
    async def assess_quality(
        ctx: Context,
        image_id: Annotated[str, Field(description="Id of the image to assess.")],
        reference_id: Annotated[str | None, Field(description="Id of a clean reference of the same size, for full-reference metrics.")] = None,
        metrics: Annotated[
            list[str] | None,
            Field(description="Only these metrics (psnr, ssim, ms_ssim, gmsd, fsim, vif, niqe, piqe); default: every one that applies."),
        ] = None,
    ) -> Quality:
        """Quality metrics of an image: the no-reference ones (NIQE, PIQE; lower is better), plus PSNR, SSIM, MS-SSIM, GMSD, FSIM and VIF when a reference is given. 'normalized' maps each onto [0, 1], higher is better."""
        from tiragent.eval.metrics import FULL_REFERENCE, NO_REFERENCE, evaluate, get_metric_info, normalized

        state = state_of(ctx)
        image = await anyio.to_thread.run_sync(state.store.get, image_id)
        reference = await anyio.to_thread.run_sync(state.store.get, reference_id) if reference_id else None
        if reference is not None and reference.shape != image.shape:
            raise ImageError(f"image {image.shape[1]}x{image.shape[0]} and reference {reference.shape[1]}x{reference.shape[0]} differ in size")
        for name in metrics or []:
            info = get_metric_info(name)
            if info.full_reference and reference is None:
                raise ImageError(f"{name} is a full-reference metric: give reference_id")
        names = metrics or NO_REFERENCE + (FULL_REFERENCE if reference is not None else [])

        async def compute(missing: list[str]) -> dict[str, float]:
            return await with_progress(ctx, config.progress_after_s, "assess_quality", anyio.to_thread.run_sync(evaluate, image, reference, missing))

        values = await state.metrics.scores(image_id, reference_id, names, lambda n: get_metric_info(n).full_reference, compute)
        return Quality(
            image_id=image_id,
            reference_id=reference_id,
            metrics={k: round(v, 5) for k, v in values.items()},
            normalized={k: round(normalized(k, v), 5) for k, v in values.items()},
        )

    @tool(annotations=ToolAnnotations(read_only_hint=True))
    @reports_errors
    async def detect_degradations(
        ctx: Context,
        image_id: Annotated[str, Field(description="Id of the image to examine.")],
        detector: Annotated[
            Literal["logistic", "learned"] | None,
            Field(description="Which detector answers: 'logistic' (image statistics) or 'learned' (CNN with severities); default: the server's (--detector)."),
        ] = None,
    ) -> Degradations:
        """Which of the eight degradations (noise, motion blur, defocus blur, rain, haze, JPEG, low resolution, low light) the image shows, with calibrated probabilities keyed by the task that removes each, and the strength of those present (noise sigma, blur size, JPEG quality, downscale factor). Treat it as a hint: docs/benchmarks/detector.md has its accuracy on images it never saw."""
        from tiragent.server.perception import analyse
        from tiragent.tasks import TASK_OF_DEGRADATION

        state = state_of(ctx)
        image = await anyio.to_thread.run_sync(state.store.get, image_id)
        found = await anyio.to_thread.run_sync(analyse, image, detector or state.config.detector, state.config.detector_weights)
        probabilities = found.probabilities
        tasks = {TASK_OF_DEGRADATION[name]: round(p, 4) for name, p in probabilities.items()}
        present = sorted((t for t, p in tasks.items() if p > 0.5), key=lambda t: -tasks[t])
        severity = {k: round(v, 2) for k, v in found.severity.items() if probabilities[k] > 0.5}
        return Degradations(image_id=image_id, present=present, tasks=tasks, degradations={k: round(v, 4) for k, v in probabilities.items()},
                            severity=severity, detector=found.detector)  # fmt: skip

    @tool(annotations=ToolAnnotations(read_only_hint=True))
    async def server_status(ctx: Context) -> dict[str, Any]:
        """Counters of the shared model pool (calls, batch sizes, queue wait, run time per tool) and of the image store."""
        state = state_of(ctx)
        return {"version": __version__, "uptime_s": round(time.time() - state.started, 1), "pool": state.pool.stats(), "store": state.store.stats(),
                "metric_cache": state.metrics.stats()}

    for task in Task:
        fn, description, meta = build_task_tool(task, _run_restoration, Context, Annotated[CallToolResult, RestoreResult])
        tools.append(strict_tool(reports_errors(fn), name=task.value, description=description, meta=meta, annotations=ToolAnnotations(read_only_hint=True)))
    return MCPServer("tir-agent", instructions=INSTRUCTIONS, version=__version__, lifespan=lifespan, log_level="WARNING", tools=tools)
