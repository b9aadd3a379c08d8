"""The Ray Serve backend, on a real two-node Ray cluster on loopback (a head and a worker, started with ``ray start``).

Through MCP, as clients use it: the same pixels as the local pool, two replicas sharing the
load, a replica killed in the middle of calls, and the status the server reports.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import numpy as np
import pytest
from conftest import free_port
from mcp import Client

from tiragent.errors import ParameterError, TirAgentError
from tiragent.eval.degradations import degrade
from tiragent.images import decode_image, encode_image
from tiragent.server.app import ServerConfig, build_server
from tiragent.server.backend import BackendConfig

RAY = Path(sys.executable).parent / "ray"
DEPLOYMENTS = """
applications:
  - name: tir-agent
    deployments:
      - name: LearnedTools
        num_replicas: 2
        max_ongoing_requests: 4
        ray_actor_options: {num_cpus: 0.5}
      - name: ClassicalTools
        num_replicas: 1
        ray_actor_options: {num_cpus: 0.5}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node and a worker node, each with its own CPUs; stopped at the end of the module."""
    import secrets

    # Ray's token authentication, as a real cluster should run: the nodes and this driver share one token (set before
    # Ray is imported here, which reads it).
    auth = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**os.environ, **auth}
    port = free_port()
    common = ["--num-cpus=1", "--disable-usage-stats"]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in auth.items():
            patch.setenv(key, value)
        pytest.importorskip("ray", reason="the Ray backend's tests need the ray extra")
        subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--include-dashboard=false", *common], check=True, env=env, capture_output=True, timeout=180)
        try:
            subprocess.run([str(RAY), "start", f"--address=127.0.0.1:{port}", *common], check=True, env=env, capture_output=True, timeout=180)
            folder = tmp_path_factory.mktemp("ray")
            (folder / "deployments.yaml").write_text(DEPLOYMENTS)
            yield f"127.0.0.1:{port}", folder / "deployments.yaml"
        finally:
            subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)


def image_data(seed: int = 0, size: int = 64) -> str:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / 9.0
    clean = (np.stack([np.sin(xx), np.cos(yy), np.sin(xx + yy)], axis=2) * 0.3 + 0.5).astype(np.float32)
    noisy, _ = degrade(clean, ["noise"], seed=int(rng.integers(1000)), params={"noise": {"kind": "gaussian", "sigma": 25}})
    return base64.b64encode(encode_image(noisy)).decode()


async def restore(client: Client, image_id: str, model: str) -> tuple[np.ndarray | None, str]:
    """The restored pixels (as a client gets them), or None and the error text."""
    result = await client.call_tool("denoise", {"image_id": image_id, "model": model})
    if result.is_error:
        return None, result.content[0].text
    fetched = await client.call_tool("get_image", {"image_id": result.structured_content["image_id"]})
    return decode_image(base64.b64decode(fetched.content[0].data)), ""


async def restore_many(client: Client, image_id: str, count: int, meanwhile=None) -> list[tuple[np.ndarray | None, str]]:
    """``count`` concurrent ``unet`` restorations; ``meanwhile`` (a coroutine function) runs while they are in flight."""
    results = []

    async def one() -> None:
        results.append(await restore(client, image_id, "unet"))

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
        if meanwhile is not None:
            await meanwhile()
    return results


def ray_server(cluster, tmp_path):
    address, deployments = cluster
    return build_server(ServerConfig(roots=[tmp_path], preview_size=0), backend=BackendConfig(backend="ray", ray_address=address, deployments=deployments))


@pytest.mark.anyio
async def test_ray_backend_gives_the_local_pixels_and_spreads_calls_over_replicas(cluster, tmp_path) -> None:
    async with Client(build_server(ServerConfig(roots=[tmp_path], preview_size=0))) as local:
        image_id = (await local.call_tool("load_image", {"data": image_data()})).structured_content["image_id"]
        expected = {model: (await restore(local, image_id, model))[0] for model in ("unet", "nlm")}
    with anyio.fail_after(400):
        async with Client(ray_server(cluster, tmp_path)) as client:
            image_id = (await client.call_tool("load_image", {"data": image_data()})).structured_content["image_id"]
            for model in ("unet", "nlm"):  # a learned tool (LearnedTools) and a classical one (ClassicalTools)
                got, error = await restore(client, image_id, model)
                assert not error and np.array_equal(got, expected[model]), f"{model}: the Ray backend's pixels differ from the local pool's"
            results = await restore_many(client, image_id, 16)
            assert all(not error for _, error in results)
            status = (await client.call_tool("server_status", {})).structured_content["pool"]
    assert status["backend"] == "ray" and status["cluster"]["nodes"] == 2
    assert status["applications"]["tir-agent-learned"]["LearnedTools"]["replicas"] == {"RUNNING": 2}
    learned = status["replicas"]["LearnedTools"]
    assert len(learned) == 2 and all(r["calls"] > 0 for r in learned.values()), learned  # both replicas served calls
    assert status["tools"]["denoise.unet"]["calls"] == 17 and status["tools"]["denoise.unet"]["errors"] == 0


@pytest.mark.anyio
async def test_a_replica_killed_mid_call_fails_only_its_calls_and_the_server_keeps_serving(cluster, tmp_path) -> None:
    with anyio.fail_after(400):
        async with Client(ray_server(cluster, tmp_path)) as client:
            # large enough that twelve calls keep both replicas busy for a few seconds, so the kill lands mid-call
            image_id = (await client.call_tool("load_image", {"data": image_data(1, size=384)})).structured_content["image_id"]
            assert not (await restore(client, image_id, "unet"))[1]
            before = (await client.call_tool("server_status", {})).structured_content["pool"]["replicas"]["LearnedTools"]

            async def kill_a_replica() -> None:
                await anyio.sleep(0.3)
                os.kill(next(iter(before.values()))["pid"], signal.SIGKILL)

            results = await restore_many(client, image_id, 12, kill_a_replica)
            failures = [error for got, error in results if got is None]
            assert len(results) == 12
            assert all("replica" in error for error in failures), failures  # a failed call says what happened
            later = [await restore(client, image_id, "unet") for _ in range(4)]
            assert all(not error for _, error in later), later
            status = (await client.call_tool("server_status", {})).structured_content["pool"]
    assert status["replica_failures"] >= 1, status  # calls were in flight at the killed replica
    assert status["tools"]["denoise.unet"]["calls"] == 17


def test_missing_ray_names_the_extra(monkeypatch) -> None:
    from tiragent.server import ray_pool

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(TirAgentError, match=r"tir-agent\[ray\]"):
        ray_pool.import_ray()


def test_the_cli_reports_missing_ray_in_one_line(tmp_path) -> None:
    blocker = tmp_path / "ray.py"
    blocker.write_text("raise ImportError('No module named ray')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    tir = shutil.which("tir-agent", path=str(Path(sys.executable).parent))
    out = subprocess.run([tir, "serve", "--backend", "ray", "--roots", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120,
                         input="")  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "tir-agent[ray]" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_deployments_file_errors_name_the_problem(tmp_path) -> None:
    from tiragent.server.ray_pool import read_deployments

    bad_name = tmp_path / "a.yaml"
    bad_name.write_text("deployments:\n  - name: Upscalers\n    num_replicas: 2\n")
    with pytest.raises(ParameterError, match="unknown deployment 'Upscalers'.*LearnedTools"):
        read_deployments(bad_name)
    bad_option = tmp_path / "b.yaml"
    bad_option.write_text("deployments:\n  - name: LearnedTools\n    replicas: 2\n")
    with pytest.raises(ParameterError, match="LearnedTools has no option replicas"):
        read_deployments(bad_option)
    with pytest.raises(ParameterError, match="does not exist"):
        read_deployments(tmp_path / "missing.yaml")
    assert read_deployments(None) == {}
