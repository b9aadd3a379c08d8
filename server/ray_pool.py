"""The Ray Serve backend of the model-call pool: the same tools, on the replicas of a Ray cluster.

Two Serve applications, each one deployment whose replicas run the local pool's own code
(``ModelPool``), so a tool gives the same pixels through either backend:

- ``LearnedTools``: every learned tool, multiplexed by tool key (``@serve.multiplexed``: a
  call goes to a replica that already holds its model), batched by ``@serve.batch`` with the
  local pool's own settings (``max_batch_size``, ``batch_wait_ms``). Give it GPUs, replicas and
  autoscaling in the deployments file (``ray_actor_options: {num_gpus: 0.5}``).
- ``ClassicalTools``: the CPU-bound tools, at most ``cpu_workers`` calls per replica at once
  (isolated ones, such as bm3d, in the replica's worker processes).

Images travel as numpy arrays, which Ray keeps in its object store, never as base64 text.
A replica that dies fails only the calls it held: each is retried on another replica up to
twice, then fails with an error that names the replica; Serve restarts the replica. The
deployments file is Ray Serve's own config format (``applications: [{deployments: [...]}]``,
or a bare ``deployments:`` list); its entries' options apply to the two deployments by name.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tiragent import errors
from tiragent.errors import ParameterError, ServerBusyError, TirAgentError, ToolExecutionError, ToolTimeoutError
from tiragent.server.pool import CallResult, PoolConfig, ToolStats, _check_array
from tiragent.server.registry import ToolParams, ToolSpec, get_tool

EXTRA_HINT = "the Ray backend needs Ray Serve, an optional extra: pip install 'tir-agent[ray]'"
APPS = {"LearnedTools": "tir-agent-learned", "ClassicalTools": "tir-agent-classical"}
DEPLOYMENT_OPTIONS = {"num_replicas", "autoscaling_config", "ray_actor_options", "max_ongoing_requests", "max_queued_requests",
                      "health_check_period_s", "health_check_timeout_s", "graceful_shutdown_timeout_s", "placement_group_bundles",
                      "placement_group_strategy", "max_replicas_per_node"}  # fmt: skip
RETRIES = 2
STARTUP_TIMEOUT_S = 600.0


def import_ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError:
        raise TirAgentError(EXTRA_HINT) from None
    return ray, serve


def read_deployments(path: Path | None) -> dict[str, dict[str, Any]]:
    """Options per deployment name from a Ray Serve config file; names and options are checked."""
    if path is None:
        return {}
    import yaml

    if not Path(path).is_file():
        raise ParameterError(f"deployments file {path} does not exist")
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise ParameterError(f"deployments file {path} is not valid YAML: {err}") from None
    entries = data.get("deployments") or [d for app in data.get("applications") or [] for d in app.get("deployments") or []]
    options = {}
    for entry in entries:
        name = entry.get("name")
        if name not in APPS:
            raise ParameterError(f"deployments file {path}: unknown deployment {name!r}; tir-agent has {', '.join(APPS)}")
        unknown = sorted(set(entry) - DEPLOYMENT_OPTIONS - {"name"})
        if unknown:
            raise ParameterError(f"deployments file {path}: {name} has no option {', '.join(unknown)}; options: {', '.join(sorted(DEPLOYMENT_OPTIONS))}")
        options[name] = {k: v for k, v in entry.items() if k != "name"}
    return options


def _reply(result: CallResult | None, error: BaseException | None, replica: str) -> dict[str, Any]:
    where = {"replica": replica, "pid": os.getpid()}
    if error is not None:
        return {"error": str(error), "kind": type(error).__name__, "retry_after_s": getattr(error, "retry_after_s", None), **where}
    assert result is not None
    return {"image": result.image, "params": result.params, "queue_wait_s": result.queue_wait_s, "run_s": result.run_s, "batch_size": result.batch_size, **where}


@lru_cache(maxsize=1)
def deployment_classes() -> tuple[Any, Any]:
    """The two deployments (defined once Ray is importable; replicas receive them by value)."""
    _, serve = import_ray()

    class _Replica:
        def __init__(self, pool_config: dict[str, Any], tools_config: str | None) -> None:
            from tiragent.server.pool import ModelPool

            if tools_config:  # the user's checkpoints, as the server registered them
                from tiragent.server.checkpoints import register_checkpoints

                register_checkpoints(Path(tools_config))
            self.pool = ModelPool(PoolConfig(**pool_config))
            self.replica = serve.get_replica_context().replica_id.unique_id

        async def _call(self, key: str, image: np.ndarray, params: dict[str, Any]) -> dict[str, Any]:
            try:
                return _reply(await self.pool.call(key, image, params), None, self.replica)
            except TirAgentError as err:
                return _reply(None, err, self.replica)

    @serve.deployment(name="LearnedTools", max_ongoing_requests=64)
    class LearnedTools(_Replica):
        def __init__(self, pool_config: dict[str, Any], tools_config: str | None, max_batch_size: int | None, batch_wait_s: float) -> None:
            super().__init__(pool_config, tools_config)
            # as the local pool: batches on a GPU, one call at a time on a CPU (measured faster there), unless configured
            self.run_batch.set_max_batch_size(max_batch_size or (8 if self.pool.device != "cpu" else 1))
            self.run_batch.set_batch_wait_timeout_s(batch_wait_s)

        @serve.multiplexed(max_num_models_per_replica=32)
        async def tool(self, key: str) -> ToolSpec:
            return get_tool(key)  # the replica's pool loads the weights on first use, within its memory budget

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
        async def run_batch(self, images: list[np.ndarray], params: list[dict[str, Any]]) -> list[dict[str, Any]]:
            key = serve.get_multiplexed_model_id()  # Serve splits batches by model id: one tool per batch
            spec = await self.tool(key)
            return list(await asyncio.gather(*(self._call(spec.key, i, p) for i, p in zip(images, params))))

        async def __call__(self, image: np.ndarray, params: dict[str, Any]) -> dict[str, Any]:
            return await self.run_batch(image, params)

    @serve.deployment(name="ClassicalTools")
    class ClassicalTools(_Replica):
        async def __call__(self, key: str, image: np.ndarray, params: dict[str, Any]) -> dict[str, Any]:
            return await self._call(key, image, params)

    return LearnedTools, ClassicalTools


class RayPool:
    """The pool interface (``server/backend.py``) over Ray Serve deployments."""

    def __init__(self, config: PoolConfig, started_cluster: bool) -> None:
        self.ray, self.serve = import_ray()
        self.config = config
        self.started_cluster = started_cluster
        self._handles: dict[str, Any] = {}
        self._stats: dict[str, ToolStats] = {}
        self._replicas: dict[str, Counter[str]] = {name: Counter() for name in APPS}
        self._pids: dict[str, int] = {}
        self.retries = 0
        self.replica_failures = 0
        self.in_flight = 0

    @classmethod
    async def start(cls, config: PoolConfig, address: str | None = None, deployments: Path | None = None, tools_config: Path | None = None) -> RayPool:
        ray, serve = import_ray()
        options = read_deployments(deployments)
        learned, classical = deployment_classes()
        replica_config = asdict(replace(config, batch_wait_ms=0.0))  # Serve's batch forms the batches; the replica runs them at once
        started = address is None and not ray.is_initialized()

        def boot() -> None:
            if not ray.is_initialized():
                ray.init(address=address, namespace="tir-agent", include_dashboard=False, log_to_driver=False, configure_logging=False)
            serve.start(http_options={"location": "NoServer"})  # the MCP server is the one entry point
            tools = str(tools_config) if tools_config else None
            serve.run(learned.options(**options.get("LearnedTools", {})).bind(replica_config, tools, config.max_batch_size, config.batch_wait_ms / 1000),
                      name=APPS["LearnedTools"], route_prefix=None)  # fmt: skip
            serve.run(classical.options(**{"max_ongoing_requests": config.cpu_workers, **options.get("ClassicalTools", {})}).bind(replica_config, tools),
                      name=APPS["ClassicalTools"], route_prefix=None)  # fmt: skip

        try:
            await asyncio.wait_for(asyncio.to_thread(boot), STARTUP_TIMEOUT_S)
        except TimeoutError:
            raise TirAgentError(
                f"Ray Serve did not bring the deployments up within {STARTUP_TIMEOUT_S:g} s: the cluster may lack the resources their "
                "ray_actor_options ask for (see `ray status` and the deployments file)"
            ) from None
        except TirAgentError:
            raise
        except Exception as err:
            raise TirAgentError(f"could not start the Ray backend ({'at ' + address if address else 'local cluster'}): {type(err).__name__}: {err}") from err
        return cls(config, started)

    def _handle(self, deployment: str, key: str) -> Any:
        if deployment not in self._handles:
            self._handles[deployment] = self.serve.get_app_handle(APPS[deployment])
        handle = self._handles[deployment]
        return handle.options(multiplexed_model_id=key) if deployment == "LearnedTools" else handle

    async def call(
        self, tool: str | ToolSpec, image: np.ndarray, params: dict[str, Any] | ToolParams | None = None, *, timeout: float | None = None
    ) -> CallResult:
        spec = tool if isinstance(tool, ToolSpec) else get_tool(tool)
        checked = spec.validate(params).model_dump()
        _check_array(image)
        if self.in_flight >= self.config.max_in_flight:
            raise ServerBusyError(f"server busy: {self.in_flight} calls in flight (limit {self.config.max_in_flight}); retry in about 1 s", 1.0)
        deployment = "LearnedTools" if spec.is_torch else "ClassicalTools"
        stats = self._stats.setdefault(spec.key, ToolStats())
        stats.calls += 1
        self.in_flight += 1
        started = time.perf_counter()
        limit = self.config.timeout_s if timeout is None else timeout
        try:
            reply = await asyncio.wait_for(self._remote(deployment, spec.key, image, checked), limit)
        except TimeoutError:
            stats.timeouts += 1
            raise ToolTimeoutError(f"{spec.key} did not finish within {limit:g} s") from None
        except TirAgentError:
            stats.errors += 1
            raise
        finally:
            self.in_flight -= 1
        self._replicas[deployment][reply["replica"]] += 1
        self._pids[reply["replica"]] = reply["pid"]
        if "error" in reply:
            stats.errors += 1
            kind = getattr(errors, reply["kind"], None)
            if kind is ServerBusyError:
                raise ServerBusyError(reply["error"], reply["retry_after_s"] or 1.0)
            raise (kind if isinstance(kind, type) and issubclass(kind, TirAgentError) else ToolExecutionError)(reply["error"])
        elapsed = time.perf_counter() - started
        stats.latencies.append(elapsed)
        stats.queue_wait_s += elapsed - reply["run_s"]
        stats.run_s += reply["run_s"]
        stats.record_batch(reply["batch_size"])
        return CallResult(reply["image"], spec.key, reply["params"], elapsed - reply["run_s"], reply["run_s"], reply["batch_size"])

    async def _remote(self, deployment: str, key: str, image: np.ndarray, params: dict[str, Any]) -> dict[str, Any]:
        args = (image, params) if deployment == "LearnedTools" else (key, image, params)
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError

        for attempt in range(RETRIES + 1):
            response = self._handle(deployment, key).remote(*args)
            try:
                return await response
            except asyncio.CancelledError:
                response.cancel()
                raise
            except BackPressureError as err:
                raise ServerBusyError(f"server busy: {deployment} has a full queue ({err}); retry in about 1 s", 1.0) from None
            except (ActorDiedError, ActorUnavailableError, RayActorError) as err:
                self.replica_failures += 1
                if attempt == RETRIES:
                    raise ToolExecutionError(
                        f"{key}: the Ray Serve replica running it died during the call, {RETRIES + 1} times ({type(err).__name__}); "
                        "Ray restarts replicas, retry shortly"
                    ) from None
                self.retries += 1
                await asyncio.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    def stats(self) -> dict[str, Any]:
        try:
            status = self.serve.status()
            apps = {
                name: {d: {"status": str(s.status.value if hasattr(s.status, "value") else s.status), "replicas": {str(k): v for k, v in s.replica_states.items()}}
                       for d, s in app.deployments.items()}
                for name, app in status.applications.items()
            }  # fmt: skip
        except Exception as err:  # noqa: BLE001 - the counters still help when the controller is unreachable
            apps = {"error": f"{type(err).__name__}: {err}"}
        return {
            "backend": "ray",
            "in_flight": self.in_flight,
            "cluster": {"nodes": len([n for n in self.ray.nodes() if n.get("Alive")]), "resources": self.ray.cluster_resources()},
            "applications": apps,
            "replicas": {d: {r: {"calls": n, "pid": self._pids.get(r)} for r, n in c.items()} for d, c in self._replicas.items()},
            "retries": self.retries,
            "replica_failures": self.replica_failures,
            "tools": {key: s.snapshot() for key, s in sorted(self._stats.items())},
        }

    async def aclose(self) -> None:
        def stop() -> None:
            if self.started_cluster:  # a cluster this server started ends with it; a shared one keeps its deployments
                self.serve.shutdown()
            self.ray.shutdown()

        await asyncio.to_thread(stop)
