"""Per-call cost of the MCP layer, and throughput with many clients on one server.

1. Overhead: one 512x512 image, one cheap tool (``lowlight`` with ``model=gamma``), called
   a) directly on a ModelPool in this process, b) through MCP by handle, over stdio and
   over streamable HTTP (server in a subprocess), with and without the 512-px preview,
   and c) an image moved in (encode + load_image) and out (get_image + decode) as base64, as clients do.
2. Throughput: 1, 8 and 32 concurrent HTTP clients on one server, each calling the same
   tool by handle in a loop.

    python benchmarks/mcp_overhead.py [--calls 60] [--size 512]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import socket
import statistics
import subprocess
import sys
import time
from contextlib import asynccontextmanager

import httpx2
import numpy as np
from common import free_port, write_report
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tiragent.images import decode_image, encode_image
from tiragent.server.pool import ModelPool

ARGS = {"model": "gamma", "gamma": 0.8}


@asynccontextmanager
async def http_server(preview: int):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiragent.cli", "serve", "--transport", "http", "--port", str(port), "--preview-size", str(preview)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def http_client(url: str) -> Client:
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(timeout=120)))


def stdio_client(preview: int) -> Client:
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "tiragent.cli", "serve", "--preview-size", str(preview)]))


async def timed(fn, calls: int) -> list[float]:
    for _ in range(3):
        await fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return times


async def by_handle(client: Client, png_b64: str, calls: int) -> list[float]:
    image_id = (await client.call_tool("load_image", {"data": png_b64})).structured_content["image_id"]

    async def one() -> None:
        result = await client.call_tool("lowlight", {"image_id": image_id, **ARGS})
        assert not result.is_error, result.content

    return await timed(one, calls)


async def base64_in(client: Client, image: np.ndarray, calls: int) -> list[float]:
    """An image into the server as a client sends one: encode it as PNG, base64, load_image."""

    async def one() -> None:
        data = base64.b64encode(encode_image(image, "png", transport=True)).decode()
        assert not (await client.call_tool("load_image", {"data": data})).is_error

    return await timed(one, calls)


async def base64_out(client: Client, image_id: str, calls: int) -> list[float]:
    """An image out of the server as a client fetches one: get_image, base64, decode the PNG."""

    async def one() -> None:
        full = await client.call_tool("get_image", {"image_id": image_id})
        assert decode_image(base64.b64decode(full.content[0].data)).shape[2] == 3

    return await timed(one, calls)


async def by_base64(client: Client, image: np.ndarray, png_b64: str, calls: int) -> dict[str, list[float]]:
    image_id = (await client.call_tool("load_image", {"data": png_b64})).structured_content["image_id"]
    return {"in": await base64_in(client, image, calls), "out": await base64_out(client, image_id, calls)}


def summary(times: list[float]) -> dict[str, float]:
    return {"median_ms": 1000 * statistics.median(times), "p90_ms": 1000 * sorted(times)[int(0.9 * len(times))]}


async def overhead(args: argparse.Namespace, image: np.ndarray, png_b64: str) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    async with ModelPool() as pool:
        rows["direct pool call (no MCP)"] = summary(await timed(lambda: pool.call("lowlight.gamma", image, {"gamma": 0.8}), args.calls))
    for preview in (0, 512):
        label = "no preview" if preview == 0 else "512-px preview"
        async with stdio_client(preview) as client:
            rows[f"stdio, by handle, {label}"] = summary(await by_handle(client, png_b64, args.calls))
            if preview == 0:
                moved = await by_base64(client, image, png_b64, args.calls)
                rows["stdio, an image in as base64 (client encodes, load_image)"] = summary(moved["in"])
                rows["stdio, an image out as base64 (get_image, client decodes)"] = summary(moved["out"])
        async with http_server(preview) as url, http_client(url) as client:
            rows[f"HTTP, by handle, {label}"] = summary(await by_handle(client, png_b64, args.calls))
            if preview == 0:
                moved = await by_base64(client, image, png_b64, args.calls)
                rows["HTTP, an image in as base64 (client encodes, load_image)"] = summary(moved["in"])
                rows["HTTP, an image out as base64 (get_image, client decodes)"] = summary(moved["out"])
    return rows


async def throughput(args: argparse.Namespace, png_b64: str) -> dict[int, dict[str, float]]:
    results = {}
    async with http_server(0) as url:
        for clients in (1, 8, 32):
            per_client = max(4, args.throughput_calls // clients)

            async def run_client(per_client: int = per_client) -> list[float]:
                async with http_client(url) as client:
                    return await by_handle(client, png_b64, per_client)

            start = time.perf_counter()
            latencies = [t for ts in await asyncio.gather(*(run_client() for _ in range(clients))) for t in ts]
            elapsed = time.perf_counter() - start
            results[clients] = {"calls": len(latencies), "calls_per_s": len(latencies) / elapsed, **summary(latencies)}
    return results


async def main_async(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((args.size, args.size, 3), dtype=np.float32)
    png_b64 = base64.b64encode(encode_image(image, "png", transport=True)).decode()
    rows = await overhead(args, image, png_b64)
    tput = await throughput(args, png_b64)
    direct = rows["direct pool call (no MCP)"]["median_ms"]
    lines = [
        f"{args.size}x{args.size} RGB image ({len(png_b64) / 2**20:.1f} MB as base64 PNG), tool `lowlight` with `model=gamma` "
        f"(a 1-ms operation, so the figures are the layers' own cost); median and 90th percentile over {args.calls} sequential calls "
        "after 3 warm-up calls; servers run as subprocesses (`tir-agent serve`).\n",
        "| path | median ms | p90 ms | added over the direct pool call (ms) |",
        "|---|---:|---:|---:|",
    ]
    for label, r in rows.items():
        lines.append(f"| {label} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['median_ms'] - direct:+.1f} |")
    lines += [
        "",
        "Throughput on one HTTP server, every client calling the tool by handle in a loop (no preview):",
        "",
        "| clients | calls | calls/s | median latency ms | p90 ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for clients, r in tput.items():
        lines.append(f"| {clients} | {r['calls']} | {r['calls_per_s']:.1f} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    print("written to", write_report("mcp_overhead", markdown, {"args": vars(args), "overhead": rows, "throughput": tput}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--throughput-calls", type=int, default=256, help="total calls per throughput row")
    parser.add_argument("--size", type=int, default=512)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
