"""Where tool calls run: the pool backend behind the MCP server.

Two implementations of one interface: the local pool (``server/pool.py``, the default: one
process, one device thread) and Ray Serve (``server/ray_pool.py``: deployments on a Ray
cluster, each replica running the local pool's own code). Tool code, the MCP surface and
clients are the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from tiragent.server.pool import CallResult, ModelPool, PoolConfig
from tiragent.server.registry import ToolParams, ToolSpec


class PoolBackend(Protocol):
    """What the MCP server needs from the place tool calls run."""

    async def call(
        self, tool: str | ToolSpec, image: np.ndarray, params: dict[str, Any] | ToolParams | None = None, *, timeout: float | None = None
    ) -> CallResult: ...

    def stats(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


@dataclass
class BackendConfig:
    """Which backend runs the tools."""

    backend: Literal["local", "ray"] = field(default="local", metadata={"help": "'local': the in-process pool; 'ray': Ray Serve deployments (pip install 'tir-agent[ray]')."})
    ray_address: str | None = field(
        default=None, metadata={"help": "Ray cluster to connect to (e.g. 'auto' or 'ray://HEAD:10001'); default: start a local one."}
    )
    deployments: Path | None = field(
        default=None,
        metadata={"help": "Ray Serve config (YAML, Serve's own format) whose deployment entries set replicas, autoscaling and ray_actor_options of 'LearnedTools' and 'ClassicalTools'."},
    )


async def open_pool(backend: BackendConfig | None, pool_config: PoolConfig | None, tools_config: Path | None = None) -> PoolBackend:
    """The backend the settings name, started (``tools_config``: the user's checkpoints, which Ray replicas register too)."""
    backend = backend or BackendConfig()
    if backend.backend == "local":
        return ModelPool(pool_config)
    from tiragent.server.ray_pool import RayPool

    return await RayPool.start(pool_config or PoolConfig(), backend.ray_address, backend.deployments, tools_config)
