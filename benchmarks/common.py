"""Helpers shared by the benchmark scripts: machine description and result files."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("TIR_SHARED_DATA", ROOT.parent / "shared" / "data"))


def free_port() -> int:
    """A free TCP port on loopback, for a server the benchmark starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def write_report(name: str, markdown: str, data: dict) -> Path:
    """Write docs/benchmarks/<name>.md (with the command and machine) and its JSON beside it."""
    out = ROOT / "docs" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        commit = "unknown"
    command = "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(ROOT)), *sys.argv[1:]])
    header = (
        f"Command: `{command}`  \n"
        f"Machine: {machine()}  \n"
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}\n\n"
    )
    (out / f"{name}.md").write_text(header + markdown)
    (out / f"{name}.json").write_text(json.dumps({"command": command, "machine": machine(), **data}, indent=2, default=str))  # paths and the like as text
    return out / f"{name}.md"


async def drive(call: Callable[[Any], Awaitable[Any]], images: list[Any], callers: int) -> dict[str, float]:
    """``callers`` concurrent callers share ``images`` and ``await call(image)`` each: throughput and latency percentiles."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for image in images:
        queue.put_nowait(image)
    latencies: list[float] = []

    async def caller() -> None:
        while not queue.empty():
            image = queue.get_nowait()
            start = time.perf_counter()
            await call(image)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "seconds": elapsed,
        "calls_per_s": len(images) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }
