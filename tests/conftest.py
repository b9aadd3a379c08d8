from __future__ import annotations

import os
import socket
import sys
from contextlib import asynccontextmanager

import anyio
import httpx2
import numpy as np
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from skimage import data
from skimage.transform import resize

from tiragent.images import to_uint8

NATIVE_EXIT = "TIR_AGENT_TEST_NATIVE_EXIT"
"""Set it to let the test process end through the interpreter's own shutdown (to chase a crash there)."""
EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End with pytest's own status once it has reported. One full run in three on these machines reported every test
    passed and then died of a segmentation fault in the interpreter's shutdown (a native library's destructor, after
    the last test), which would fail CI on tests that passed; the status is the tests', not the destructors'."""
    status = config.stash.get(EXIT_STATUS, None)
    if status is not None and not os.environ.get(NATIVE_EXIT):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A natural photo that scikit-image ships (public domain), 128x128, float32 RGB."""
    return resize(data.astronaut(), (128, 128), anti_aliasing=True).astype(np.float32)


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    return resize(data.coffee(), (96, 144), anti_aliasing=True).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-12)))


def quantize(image: np.ndarray) -> np.ndarray:
    return to_uint8(image).astype(np.float32) / 255.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def running(app):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(30):
            while not server.started:
                await anyio.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            server.should_exit = True


def http_client(url: str, token: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=60)))




@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny random Qwen3-VL policy built offline, once per test run."""
    from tiragent.agent.tiny import build_tiny_qwen

    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture
async def session(tmp_path):
    """An agent-side tool session on an in-memory server.

    Its detector is the logistic one: these tests check how policies follow a detection on the small images they make,
    not what the shipped learned detector (the server's default, tested in test_detector.py) reads in them."""
    from tiragent.agent.session import ToolSession
    from tiragent.server.app import ServerConfig, build_server

    async with Client(build_server(ServerConfig(roots=[tmp_path], preview_size=0, detector="logistic"))) as client:
        yield ToolSession(client)
