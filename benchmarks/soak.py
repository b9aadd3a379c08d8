"""A bounded soak of the HTTP server: mixed load with faults interleaved, recorded over time windows.

On loopback only, stopping by itself after ``--seconds``. A server subprocess (this script with
``--serve PORT``, which also registers two test-only tools: one that hangs past its timeout, one
that raises) takes ``--clients`` concurrent MCP clients, each looping over a mix:

- well-formed calls: ``load_image``, a classical tool, a learned tool, ``assess_quality``,
  ``detect_degradations``, ``get_image``;
- malformed ones: an unknown image id, bad base64, an out-of-range and a wrong-type parameter;
- faults: a body over the size limit, a client that disconnects in the middle of a slow call, the
  hanging tool, the raising tool, now and then a burst past the backpressure limit, a path outside
  the allowed roots, and a request with a foreign Origin and Host (DNS rebinding).

Per window: calls completed, errors by kind, p50 and p99 latency of the well-formed calls, the
server's resident memory and open file descriptors, and its store's memory and disk. Passes when
every well-formed call succeeded or was told "busy", every malformed one got a clear error, no
call hung, the last window's p99 is within 1.5x of the first's, memory and disk stay bounded, and
the server is alive at the end.

    python benchmarks/soak.py [--seconds 600] [--max-calls 1000000] [--clients 8] [--window 60] [--name soak]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx2
import numpy as np
from common import free_port, write_report

WELL_FORMED = ("load_image", "denoise.wavelet", "denoise.unet", "assess_quality", "detect_degradations", "get_image")
CALL_TIMEOUT_S = 60.0
"""A call that takes longer counts as hung."""


def run_server(port: int, store_mb: int) -> None:
    """The server side: test-only tools registered, then `tir-agent serve` over HTTP with small limits."""
    from tiragent.server.config import ServerConfig, TransportConfig
    from tiragent.server.pool import PoolConfig
    from tiragent.server.registry import Cost, register_tool
    from tiragent.server.serve import serve
    from tiragent.tasks import Task

    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))  # for the worker processes
    sys.path.insert(0, here)
    from soak_tools import fail, hang, slow

    # A tool that may hang is registered isolated: its worker process is killed at the timeout (a thread cannot be
    # killed, and a hung thread would hold one of the CPU workers every other classical tool needs).
    register_tool(Task.DEHAZE, "soak_hang", cost=Cost.LOW, isolated=True)(hang)
    register_tool(Task.DEHAZE, "soak_fail", cost=Cost.LOW)(fail)
    register_tool(Task.DEHAZE, "soak_slow", cost=Cost.LOW, isolated=True)(slow)
    config = ServerConfig(preview_size=0, store_memory_mb=store_mb, store_disk_mb=store_mb)
    serve(config, PoolConfig(device="cpu", timeout_s=3.0, max_in_flight=48, max_queue=2, cpu_workers=2, process_workers=8), TransportConfig(transport="http", port=port, max_body_mb=2))


def process_figures(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return {"rss_mb": rss / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


class Recorder:
    def __init__(self, max_calls: int = 1_000_000) -> None:
        self.latencies: list[float] = []
        self.outcomes: Counter[str] = Counter()
        self.total, self.max_calls = 0, max_calls

    @property
    def done(self) -> bool:
        """The run's request budget is spent (the run is bounded in requests as well as in time)."""
        return self.total >= self.max_calls

    def take(self) -> tuple[list[float], Counter[str]]:
        taken = self.latencies, self.outcomes
        self.latencies, self.outcomes = [], Counter()
        return taken


def png_b64(rng: np.random.Generator, side: int) -> str:
    from tiragent.images import encode_image

    image = np.clip(0.5 + 0.1 * rng.standard_normal((side, side, 3)), 0, 1).astype(np.float32)
    return base64.b64encode(encode_image(image, "png")).decode()


async def client_loop(url: str, index: int, stop_at: float, recorder: Recorder, problems: list[str], turn: int = 0) -> int:
    """One client session until the run ends or it disconnects (one of its faults); returns where its faults' turns are."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    rng = np.random.default_rng(index)
    draw = random.Random(index)

    async def call(client: Client, tool: str, arguments: dict, kind: str, expect_error: bool, timed: bool = True) -> object | None:
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(client.call_tool(tool, arguments), CALL_TIMEOUT_S)
        except TimeoutError:
            recorder.outcomes["hung"] += 1
            problems.append(f"{kind}: no answer within {CALL_TIMEOUT_S} s")
            return None
        seconds = time.perf_counter() - started
        recorder.total += 1
        text = " ".join(getattr(c, "text", "") for c in result.content) if result.is_error else ""
        if expect_error:
            ok = result.is_error and len(text) > 10
            recorder.outcomes[f"{kind}: clear error" if ok else f"{kind}: UNEXPECTED"] += 1
            if not ok:
                problems.append(f"{kind}: expected a clear error, got {'an unclear error' if result.is_error else 'success'}")
        elif result.is_error and "server busy" in text:
            recorder.outcomes["busy"] += 1
        elif result.is_error:
            recorder.outcomes[f"{kind}: FAILED"] += 1
            problems.append(f"{kind} failed: {text[:200]}")
        else:
            recorder.outcomes["ok"] += 1
            if timed:  # the burst's own queueing is the fault it injects, not the latency of the mix
                recorder.latencies.append(seconds)
        return result

    # the faults take turns, so that a short run meets every kind
    async with Client(streamable_http_client(url, http_client=httpx2.AsyncClient(timeout=CALL_TIMEOUT_S))) as client:
        while time.time() < stop_at and not recorder.done:
            loaded = await call(client, "load_image", {"data": png_b64(rng, draw.choice([64, 128]))}, "load_image", False)
            if loaded is None or loaded.is_error:
                continue
            image_id = loaded.structured_content["image_id"]
            for tool, arguments in ((("denoise", {"model": "wavelet"}), ("denoise", {"model": "unet"}), ("assess_quality", {}),
                                     ("detect_degradations", {}), ("get_image", {"max_side": 64}))):  # fmt: skip
                await call(client, tool, {"image_id": image_id, **arguments}, f"{tool}.{arguments.get('model', '')}".rstrip("."), False)
            fault, turn = turn % 11, turn + 1
            if fault == 0:
                await call(client, "denoise", {"image_id": "img_0000000000000000", "model": "wavelet"}, "unknown id", True)
            elif fault == 1:
                await call(client, "load_image", {"data": "not base64 at all!"}, "bad base64", True)
            elif fault == 2:
                await call(client, "denoise", {"image_id": image_id, "model": "wavelet", "sigma": -5}, "out-of-range parameter", True)
            elif fault == 3:
                await call(client, "denoise", {"image_id": image_id, "model": "wavelet", "sigma": "loud"}, "wrong-type parameter", True)
            elif fault == 4:
                await call(client, "dehaze", {"image_id": image_id, "model": "soak_hang"}, "hanging tool", True)
            elif fault == 5:
                await call(client, "dehaze", {"image_id": image_id, "model": "soak_fail"}, "raising tool", True)
            elif fault == 6:  # a body over the 2 MB limit
                async with httpx2.AsyncClient(timeout=30) as raw:
                    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "load_image", "arguments": {"data": "A" * (3 * 2**20)}}}
                    response = await raw.post(url, json=body, headers={"Accept": "application/json, text/event-stream"})
                    recorder.outcomes["body over the limit: clear error" if response.status_code == 413 else "body over the limit: UNEXPECTED"] += 1
            elif fault == 7:  # disconnect in the middle of a slow call
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):  # the call this client abandons
                    await asyncio.wait_for(client.call_tool("dehaze", {"image_id": image_id, "model": "soak_slow"}), 0.2)
                recorder.outcomes["disconnected mid-call"] += 1
                break  # this client's session ends here; the loop below opens a new one
            elif fault == 9:  # a path outside the allowed roots, under load as alone
                path = draw.choice(["/etc/passwd", "../../etc/hosts", "/proc/self/environ"])
                await call(client, "load_image", {"path": path}, "path outside the roots", True)
            elif fault == 10:  # a request from a foreign web page (DNS rebinding): refused before any tool runs
                async with httpx2.AsyncClient(timeout=30) as raw:
                    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
                    headers = {"Accept": "application/json, text/event-stream", "Origin": "http://evil.example", "Host": "evil.example"}
                    response = await raw.post(url, json=body, headers=headers)
                    refused = response.status_code in (400, 403, 421)
                    recorder.outcomes["foreign origin: refused" if refused else "foreign origin: UNEXPECTED"] += 1
                    if not refused:
                        problems.append(f"a request with a foreign Origin and Host got {response.status_code}")
            elif fault == 8 and draw.random() < 0.5:  # a burst past the backpressure limit
                burst = await asyncio.gather(*(call(client, "dehaze", {"image_id": image_id, "model": "soak_slow"}, "burst", False, timed=False) for _ in range(60)))
                recorder.outcomes["burst calls"] += len(burst)
    return turn


async def status(url: str) -> dict:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with Client(streamable_http_client(url, http_client=httpx2.AsyncClient(timeout=30))) as client:
        return (await client.call_tool("server_status", {})).structured_content


async def soak(url: str, pid: int, seconds: float, clients: int, window: float, max_calls: int = 1_000_000) -> dict:
    recorder, problems = Recorder(max_calls), []
    stop_at = time.time() + seconds

    async def client_forever(index: int) -> None:
        generation, turn = 0, index
        while time.time() < stop_at and not recorder.done:  # a client that disconnected comes back as a new session
            turn = await client_loop(url, index * 1000 + generation, stop_at, recorder, problems, turn)
            generation += 1

    windows = []

    async def watch() -> None:
        while time.time() < stop_at and not recorder.done:
            await asyncio.sleep(min(window, max(0.1, stop_at - time.time())))
            latencies, outcomes = recorder.take()
            store = (await status(url))["store"]
            lat = sorted(latencies)
            windows.append({
                "t_s": round(seconds - max(0.0, stop_at - time.time()), 1), "calls": sum(outcomes.values()), "ok": outcomes["ok"],
                "p50_ms": 1000 * statistics.median(lat) if lat else 0.0, "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else 0.0,
                **process_figures(pid), "store": store, "outcomes": dict(outcomes),
            })  # fmt: skip
            print(json.dumps({k: v for k, v in windows[-1].items() if k not in ("store", "outcomes")}), flush=True)

    await asyncio.gather(watch(), *(client_forever(i) for i in range(clients)))
    alive = bool(await status(url))
    return {"windows": windows, "problems": problems[:50], "problem_count": len(problems), "alive": alive}


def verdict(result: dict, store_mb: int) -> list[str]:
    """The pass criteria that failed (empty: passed)."""
    failed = []
    windows = result["windows"]
    if result["problem_count"]:
        failed.append(f"{result['problem_count']} calls misbehaved, e.g. {result['problems'][:3]}")
    if not result["alive"]:
        failed.append("the server was not alive at the end")
    if len(windows) >= 2 and windows[0]["p99_ms"] and windows[-1]["p99_ms"] > 1.5 * windows[0]["p99_ms"]:
        failed.append(f"p99 grew from {windows[0]['p99_ms']:.0f} to {windows[-1]['p99_ms']:.0f} ms")
    for w in windows:
        if w["store"].get("memory_bytes", 0) / 2**20 > store_mb * 1.05 or w["store"].get("disk_bytes", 0) / 2**20 > store_mb * 1.05:
            failed.append(f"the store outgrew its {store_mb} MB budget at {w['t_s']} s")
            break
    if len(windows) >= 3 and windows[-1]["rss_mb"] > 1.5 * windows[1]["rss_mb"]:
        failed.append(f"resident memory grew from {windows[1]['rss_mb']:.0f} to {windows[-1]['rss_mb']:.0f} MB")
    # A leak raises every later window; sockets of calls in flight (a hung tool, a client that just dropped) raise one
    # sample: the least of the later half is what stays open.
    later = min(w["fds"] for w in windows[len(windows) // 2 :]) if len(windows) >= 3 else 0
    if len(windows) >= 3 and later > windows[1]["fds"] + 20:
        failed.append(f"open file descriptors grew from {windows[1]['fds']} to at least {later} in every later window")
    return failed


def start_server(store_mb: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--store-mb", str(store_mb)], stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"http://127.0.0.1:{port}/mcp"
        if process.poll() is not None:
            raise SystemExit("the soak's server did not start")
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the soak's server did not open its port within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--window", type=float, default=60)
    parser.add_argument("--max-calls", type=int, default=1_000_000, help="stop earlier once this many calls are answered")
    parser.add_argument("--store-mb", type=int, default=64)
    parser.add_argument("--name", default="soak")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: be the server, on this port
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.store_mb)
        return
    process, url = start_server(args.store_mb)
    try:
        result = asyncio.run(soak(url, process.pid, args.seconds, args.clients, args.window, args.max_calls))
    finally:
        process.terminate()
        process.wait(timeout=30)
    failed = verdict(result, args.store_mb)
    totals: Counter[str] = Counter()
    for w in result["windows"]:
        totals.update(w["outcomes"])
    rows = [f"| {w['t_s']:.0f} | {w['calls']} | {w['ok']} | {w['p50_ms']:.0f} | {w['p99_ms']:.0f} | {w['rss_mb']:.0f} | {w['fds']} | "
            f"{w['store'].get('memory_mb', 0):.1f} | {w['store'].get('disk_mb', 0):.1f} |" for w in result["windows"]]  # fmt: skip
    markdown = (
        f"# Soak of the HTTP server\n\n{args.clients} clients for {args.seconds:.0f} s on loopback, windows of {args.window:.0f} s; "
        f"store budget {args.store_mb} MB (memory and disk); pool: 48 calls in flight, 2 waiting per tool, 2 CPU threads, 8 worker processes "
        "(the hanging and the slow test tools are isolated), tool timeout 3 s.\n\n"
        "| t (s) | calls | ok | p50 (ms) | p99 (ms) | server RSS (MB) | open fds | store memory (MB) | store disk (MB) |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\nOutcomes over the run: "
        + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())) + ".\n\n"
        + ("**Passed**: every well-formed call succeeded or was told busy, every malformed one got a clear error, no call hung, "
           "p99 stayed within 1.5x, memory, descriptors and disk stayed bounded, and the server was alive at the end.\n" if not failed
           else "**Failed**: " + "; ".join(failed) + "\n")
    )  # fmt: skip
    print(markdown)
    if args.name:
        print(write_report(args.name, markdown, {**result, "failed": failed}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
