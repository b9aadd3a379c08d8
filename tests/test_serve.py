"""The server over real transports: a stdio subprocess, streamable HTTP with and without a token,
many clients at once, and the official MCP Inspector as an outside client."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import shutil
import subprocess
import sys

import anyio
import httpx2
import numpy as np
import pytest
import torch
from conftest import http_client, running
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from torch import nn

from tiragent.errors import TirAgentError
from tiragent.images import encode_image, write_image
from tiragent.server.app import ServerConfig
from tiragent.server.pool import PoolConfig
from tiragent.server.registry import ModelDescriptor, register_torch_tool, unregister
from tiragent.server.serve import http_app, read_token

pytestmark = pytest.mark.anyio
TOKEN = "test-token-1234"


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def png_b64(value: float, size: int = 32) -> str:
    return base64.b64encode(encode_image(np.full((size, size, 3), value, np.float32))).decode()


@pytest.fixture
def root(tmp_path, astronaut):
    write_image(astronaut, tmp_path / "photo.png")
    return tmp_path


async def test_stdio_subprocess(root):
    params = StdioServerParameters(command=sys.executable, args=["-m", "tiragent.cli", "serve", "--roots", str(root)])
    async with Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"denoise", "sr", "load_image"} <= names
        loaded = await client.call_tool("load_image", {"path": "photo.png"})
        result = await client.call_tool("lowlight", {"image_id": loaded.structured_content["image_id"], "model": "gamma", "gamma": 0.8})
        assert not result.is_error and result.structured_content["model"] == "gamma"
        bad = await client.call_tool("load_image", {"path": "/etc/passwd"})
        assert bad.is_error and "outside the allowed roots" in bad.content[0].text


async def test_http_with_and_without_the_token(root):
    app = http_app(ServerConfig(roots=[root]), host="127.0.0.1", token=TOKEN, max_body_mb=4)
    async with running(app) as url:
        async with httpx2.AsyncClient() as raw:
            refused = await raw.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            wrong = await raw.post(url, json={}, headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401 and wrong.status_code == 401
        with pytest.raises(BaseExceptionGroup) as refused_client:
            async with http_client(url) as client:
                await client.list_tools()
        assert [type(e) for e in leaves(refused_client.value)] == [MCPError]  # the 401, as the SDK's client reports it
        async with http_client(url, TOKEN) as client:
            loaded = await client.call_tool("load_image", {"path": "photo.png"})
            result = await client.call_tool("dehaze", {"image_id": loaded.structured_content["image_id"]})
            assert not result.is_error and result.structured_content["width"] == 128


async def test_http_without_token_on_loopback_and_body_limit(root):
    app = http_app(ServerConfig(roots=[root]), host="127.0.0.1", token=None, max_body_mb=0.05)
    async with running(app) as url:
        async with http_client(url) as client:
            small = await client.call_tool("load_image", {"data": png_b64(0.5, 16)})
            assert not small.is_error
            with pytest.raises(MCPError, match="error response"):
                await client.call_tool("load_image", {"data": base64.b64encode(np.random.bytes(200_000)).decode()})
        async with httpx2.AsyncClient() as raw:  # what the client above met: 413, with the limit named
            headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
            oversized = await raw.post(url, content=b"{" + b" " * 100_000 + b"}", headers=headers)
        assert oversized.status_code == 413, (oversized.status_code, oversized.text)
        async with http_client(url) as client:  # the server is still serving
            assert not (await client.call_tool("load_image", {"data": png_b64(0.25, 16)})).is_error


def test_non_loopback_binding_requires_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("TIR_AGENT_TOKEN", raising=False)
    with pytest.raises(TirAgentError, match="set a bearer token"):
        http_app(ServerConfig(roots=[tmp_path]), host="0.0.0.0", token=None, max_body_mb=4)
    assert http_app(ServerConfig(roots=[tmp_path]), host="0.0.0.0", token=TOKEN, max_body_mb=4) is not None
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert read_token(token_file) == "from-file"
    monkeypatch.setenv("TIR_AGENT_TOKEN", "from-env")
    assert read_token(None) == "from-env"
    token_file.write_text("")
    with pytest.raises(TirAgentError, match="token file is empty"):
        read_token(token_file)


BATCHES: list[list[float]] = []


class RecordingNet(nn.Module):
    """Identity that records which inputs (by their constant value) shared each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        BATCHES.append(sorted(round(float(v), 2) for v in x.mean(dim=(1, 2, 3))))
        return x * self.scale


@pytest.fixture
def recording_tool():
    register_torch_tool("denoise", "t_record", cost="low", descriptor=ModelDescriptor(), description="records batches")(RecordingNet)
    BATCHES.clear()
    yield
    unregister("denoise.t_record")


async def test_four_clients_with_32_concurrent_calls_each_share_batches(root, recording_tool):
    config, pool_config = ServerConfig(roots=[root], preview_size=0), PoolConfig(max_batch_size=32, batch_wait_ms=30)
    async with running(http_app(config, host="127.0.0.1", token=None, max_body_mb=4, pool_config=pool_config)) as url:
        results: dict[int, list] = {}

        async def one_client(index: int) -> None:
            value = 0.1 * (index + 1)
            async with http_client(url) as client:
                image_id = (await client.call_tool("load_image", {"data": png_b64(value)})).structured_content["image_id"]
                outcomes = []

                async def call() -> None:
                    outcomes.append(await client.call_tool("denoise", {"image_id": image_id, "model": "t_record"}))

                async with anyio.create_task_group() as tg:
                    for _ in range(32):
                        tg.start_soon(call)
                results[index] = outcomes

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one_client, i)
        async with http_client(url) as client:
            status = (await client.call_tool("server_status", {})).structured_content

    assert all(len(r) == 32 and not any(o.is_error for o in r) for r in results.values())
    stats = status["pool"]["tools"]["denoise.t_record"]
    assert stats["calls"] == 128 and stats["errors"] == 0
    assert stats["mean_batch_size"] > 1 and stats["batches"] < 128
    assert any(len(set(batch)) > 1 for batch in BATCHES), "no batch mixed calls from different clients"


INSPECTOR = ["npx", "-y", "@modelcontextprotocol/inspector@2.12.0", "--cli"]


def inspector(*args: str) -> dict:
    done = subprocess.run([*INSPECTOR, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@functools.cache
def inspector_unavailable() -> str | None:
    """Why the Inspector cannot run here, found within seconds: no npx, or an npm registry that does not answer."""
    if shutil.which("npx") is None or shutil.which("npm") is None:
        return "npx is not installed"
    probe = ["npm", "view", INSPECTOR[2], "version", "--fetch-timeout=5000", "--fetch-retries=0"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the npm registry did not answer within 20 s"
    return None if done.returncode == 0 else f"the npm registry is unreachable ({done.stderr.strip().splitlines()[-1:] or '?'})"


async def test_mcp_inspector_lists_and_calls_over_stdio_and_http(root):
    if (reason := inspector_unavailable()) is not None:
        pytest.skip(reason)
    serve = [sys.executable, "-m", "tiragent.cli", "serve", "--roots", str(root)]
    listed = await anyio.to_thread.run_sync(lambda: inspector(*serve, "--method", "tools/list"))
    assert "denoise" in {t["name"] for t in listed["tools"]}
    called = await anyio.to_thread.run_sync(
        lambda: inspector(*serve, "--method", "tools/call", "--tool-name", "load_image", "--tool-arg", "path=photo.png")
    )
    assert called["structuredContent"]["width"] == 128
    async with running(http_app(ServerConfig(roots=[root]), host="127.0.0.1", token=None, max_body_mb=4)) as url:
        listed = await anyio.to_thread.run_sync(lambda: inspector(url, "--transport", "http", "--method", "tools/list"))
        assert "dehaze" in {t["name"] for t in listed["tools"]}
        called = await anyio.to_thread.run_sync(
            lambda: inspector(url, "--transport", "http", "--method", "tools/call", "--tool-name", "load_image", "--tool-arg", "path=photo.png")
        )
        assert called["structuredContent"]["height"] == 128


async def test_results_of_large_images_reach_default_clients_over_http(root):
    from tiragent.agent.actions import Action
    from tiragent.agent.session import open_session
    from tiragent.server.app import PREVIEW_BUDGET

    noisy = np.random.default_rng(0).random((640, 640, 3)).astype(np.float32)  # incompressible: its PNG is over 1 MiB
    write_image(noisy, root / "noisy.png")
    app = http_app(ServerConfig(roots=[root]), host="127.0.0.1", token=None, max_body_mb=4)
    async with running(app) as url:
        async with http_client(url) as client:  # the SDK's own client, with its default event limit
            loaded = await client.call_tool("load_image", {"path": "noisy.png"})
            result = await client.call_tool("denoise", {"image_id": loaded.structured_content["image_id"], "model": "wavelet"})
            assert not loaded.is_error and not result.is_error
            previews = [c for c in result.content if c.type == "image"]
            assert previews and len(previews[0].data) <= PREVIEW_BUDGET
        async with open_session(url) as session:  # ours takes full-resolution images, several at once
            image_id = await session.load(noisy)
            done = await session.apply(Action("denoise", "wavelet"), image_id)
            images = await asyncio.gather(*(session.fetch(i) for i in (image_id, done.image_id, image_id)))
            assert [im.shape for im in images] == [(640, 640, 3)] * 3
            assert np.abs(images[0] - noisy).max() <= 1 / 255
