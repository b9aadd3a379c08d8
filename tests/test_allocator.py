"""The pool keeps the memory model calls free for the next call, so calls do not page-fault their activations afresh.

Measured in a fresh interpreter (the allocator's settings are process-wide), with OpenCV
loaded as the server's tools load it: before the fix, each 256x256 forward of a five-layer
CNN took about 2,800 page faults there, and the pool ran at 0.65x a plain loop.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    import cv2  # noqa: F401  (loaded by the server's classical tools)
    import numpy as np, torch
    from torch import nn
    from tiragent.server.pool import ModelPool, PoolConfig
    from tiragent.server.registry import ModelDescriptor, register_torch_tool

    def build():
        torch.manual_seed(0)
        layers = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()]
        return nn.Sequential(*layers, nn.Conv2d(16, 3, 3, padding=1))

    register_torch_tool("denoise", "faults_cnn", cost="low", descriptor=ModelDescriptor(), description="test")(build)

    async def main():
        image = np.random.default_rng(0).random((256, 256, 3), dtype=np.float32)
        async with ModelPool(PoolConfig(device="cpu", retain_freed_mb=int(sys.argv[1]))) as pool:
            for _ in range(5):
                await pool.call("denoise.faults_cnn", image)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(20):
                await pool.call("denoise.faults_cnn", image)
            faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
            print(json.dumps({"retains": pool.retains_freed_memory, "faults_per_call": faults}))

    asyncio.run(main())
    """
)


def faults_per_call(retain_mb: int) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(retain_mb)], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's")
def test_model_calls_reuse_freed_memory() -> None:
    kept = faults_per_call(256)
    assert kept["retains"] is True
    # One 256x256x16 float activation is 1,024 pages: a call that maps its activations afresh faults thousands of times.
    assert kept["faults_per_call"] < 300, kept


def test_zero_leaves_the_allocator_alone() -> None:
    from tiragent.server.allocator import retain_freed_memory

    assert retain_freed_memory(0) is False
