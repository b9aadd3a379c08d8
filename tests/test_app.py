"""The MCP tool server through an in-memory client: tool surface, images by handle, errors."""

from __future__ import annotations

import base64
import os

import numpy as np
import pytest
from conftest import psnr
from mcp import Client

from tiragent.eval.degradations import degrade
from tiragent.images import decode_image, encode_image, read_image, write_image
from tiragent.server.app import ServerConfig, build_server
from tiragent.server.registry import list_tools
from tiragent.tasks import Task

pytestmark = pytest.mark.anyio


@pytest.fixture
def roots(tmp_path, astronaut):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    noisy, _ = degrade(astronaut, ["noise"], params={"noise": {"kind": "gaussian", "sigma": 30}})
    write_image(astronaut, inputs / "clean.png")
    write_image(noisy, inputs / "noisy.png")
    return inputs, outputs


@pytest.fixture
def server(roots):
    inputs, outputs = roots
    return build_server(ServerConfig(roots=[inputs], output_root=outputs, preview_size=64, progress_after_s=0.2))


async def load(client, path):
    result = await client.call_tool("load_image", {"path": path})
    assert not result.is_error, result.content
    return result.structured_content["image_id"]


async def test_tool_surface_is_one_tool_per_task_with_a_model_enum(server):
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert {t.value for t in Task} <= set(tools)
    assert {"load_image", "get_image", "save_image", "assess_quality", "server_status"} <= set(tools)
    for task in Task:
        schema = tools[task.value].input_schema
        assert schema["required"] == ["image_id"]
        assert set(schema["properties"]["model"]["enum"]) == {s.name for s in list_tools(task)}
        for spec in list_tools(task):
            assert spec.name in tools[task.value].description
            for field in spec.params.model_fields:
                assert field in schema["properties"], (task, field)
        assert "ctx" not in schema["properties"]
        assert {"image_id", "task", "model", "seconds"} <= set(tools[task.value].output_schema["properties"])
    sigma = tools["denoise"].input_schema["properties"]["sigma"]["anyOf"][0]
    assert sigma["minimum"] == 0 and sigma["maximum"] == 100
    assert tools["denoise"].input_schema["properties"]["model"]["default"] == "unet"


async def test_super_resolution_defaults_to_the_network_of_the_scale_asked(server, roots):
    async with Client(server) as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == "sr")
        model = tool.input_schema["properties"]["model"]
        assert model["default"] == "srnet_x4" and "(scale 2: srnet_x2)" in model["description"]
        image = await load(client, "noisy.png")  # 128 x 128

        async def run(arguments):
            result = await client.call_tool("sr", {"image_id": image, **arguments})
            assert not result.is_error, result.content
            return result.structured_content["model"], result.structured_content["width"]

        assert await run({}) == ("srnet_x4", 512)
        assert await run({"scale": 2}) == ("srnet_x2", 256)  # no model named: the default of that scale
        assert await run({"model": "srnet_x2", "scale": 2}) == ("srnet_x2", 256)  # a fixed-scale model asked for its own scale
        assert await run({"model": "lanczos", "scale": 2}) == ("lanczos", 256)
        assert "takes no parameter 'scale'" in await error_text(client, "sr", {"image_id": image, "model": "srnet_x2", "scale": 4})


async def test_restore_by_handle_with_preview_and_structured_content(server, roots, astronaut):
    async with Client(server) as client:
        noisy = await load(client, "noisy.png")
        clean = await load(client, "clean.png")
        result = await client.call_tool("denoise", {"image_id": noisy, "model": "nlm", "sigma": 30})
        assert not result.is_error
        info = result.structured_content
        assert info["input_id"] == noisy and info["image_id"].startswith("img_") and info["image_id"] != noisy
        assert (info["task"], info["model"], info["params"]) == ("denoise", "nlm", {"sigma": 30.0})
        assert info["width"] == 128 and info["seconds"] > 0 and info["queue_wait_seconds"] >= 0
        preview = [b for b in result.content if b.type == "image"][0]
        assert preview.mime_type == "image/png"
        assert decode_image(base64.b64decode(preview.data)).shape == (64, 64, 3)

        full = await client.call_tool("get_image", {"image_id": info["image_id"]})
        restored = decode_image(base64.b64decode(full.content[0].data))
        assert restored.shape == (128, 128, 3)
        assert psnr(restored, astronaut) > psnr(read_image(roots[0] / "noisy.png"), astronaut) + 3

        quality = await client.call_tool("assess_quality", {"image_id": info["image_id"], "reference_id": clean})
        metrics = quality.structured_content["metrics"]
        assert {"psnr", "ssim", "niqe", "piqe"} <= set(metrics)
        assert metrics["psnr"] == pytest.approx(psnr(restored, astronaut), abs=0.1)
        assert all(0 <= v <= 1 for v in quality.structured_content["normalized"].values())

        saved = await client.call_tool("save_image", {"image_id": info["image_id"], "path": "sub/restored.png"})
        assert not saved.is_error
        assert np.allclose(read_image(roots[1] / "sub" / "restored.png"), restored, atol=1 / 255)


async def test_store_is_content_addressed_and_loads_base64(server, roots):
    data = base64.b64encode((roots[0] / "clean.png").read_bytes()).decode()
    async with Client(server) as client:
        by_path = await load(client, "clean.png")
        by_data = await client.call_tool("load_image", {"data": data})
        by_url = await client.call_tool("load_image", {"data": "data:image/png;base64," + data})
    assert by_data.structured_content["image_id"] == by_path == by_url.structured_content["image_id"]


async def test_super_resolution_returns_a_larger_image(server):
    async with Client(server) as client:
        small = await client.call_tool("load_image", {"data": base64.b64encode(encode_image(np.full((40, 30, 3), 0.5, np.float32))).decode()})
        result = await client.call_tool("sr", {"image_id": small.structured_content["image_id"], "model": "lanczos", "scale": 4})
    assert (result.structured_content["width"], result.structured_content["height"]) == (120, 160)


async def error_text(client, tool, args):
    result = await client.call_tool(tool, args)
    assert result.is_error, result.content
    return result.content[0].text


async def test_bad_input_comes_back_as_tool_errors_and_the_server_keeps_serving(server, roots, tmp_path):
    (roots[0] / "empty.png").write_bytes(b"")
    (roots[0] / "notes.png").write_text("not an image")
    outside = tmp_path / "secret.png"
    write_image(np.zeros((16, 16, 3), np.float32), outside)
    os.symlink(outside, roots[0] / "link.png")
    async with Client(server) as client:
        image = await load(client, "noisy.png")
        assert "0 bytes" in await error_text(client, "load_image", {"path": "empty.png"})
        assert "not a recognised image format" in await error_text(client, "load_image", {"path": "notes.png"})
        assert "outside the allowed roots" in await error_text(client, "load_image", {"path": "../secret.png"})
        assert "outside the allowed roots" in await error_text(client, "load_image", {"path": str(outside)})
        assert "outside the allowed roots" in await error_text(client, "load_image", {"path": "link.png"})
        assert "no such file" in await error_text(client, "load_image", {"path": "missing.png"})
        assert "exactly one of path or data" in await error_text(client, "load_image", {})
        assert "not valid base64" in await error_text(client, "load_image", {"data": "@@@"})
        assert "unknown image_id 'img_nope'" in await error_text(client, "denoise", {"image_id": "img_nope"})
        assert "less than or equal to 100" in await error_text(client, "denoise", {"image_id": image, "sigma": 500})
        assert "'nope'" in await error_text(client, "denoise", {"image_id": image, "model": "nope"})
        assert "model 'cap' takes no parameter 'omega' (omega belongs to dcp)" in await error_text(
            client, "dehaze", {"image_id": image, "model": "cap", "omega": 0.9}
        )
        assert "outside the output root" in await error_text(client, "save_image", {"image_id": image, "path": "../escape.png"})
        assert "outside the output root" in await error_text(client, "save_image", {"image_id": image, "path": "/tmp/escape.png"})
        assert "cannot save as '.exe'" in await error_text(client, "save_image", {"image_id": image, "path": "x.exe"})
        assert "differ in size" in await error_text(
            client, "assess_quality", {"image_id": image, "reference_id": (await client.call_tool("sr", {"image_id": image, "scale": 2})).structured_content["image_id"]}
        )
        ok = await client.call_tool("dehaze", {"image_id": image})
        assert not ok.is_error
    assert not (tmp_path / "escape.png").exists()


async def test_pixel_limit_applies_to_inputs_and_outputs(roots):
    inputs, outputs = roots
    server = build_server(ServerConfig(roots=[inputs], output_root=outputs, max_pixels=100_000))
    big = base64.b64encode(encode_image(np.zeros((400, 300, 3), np.float32))).decode()
    async with Client(server) as client:
        assert "over the limit" in await error_text(client, "load_image", {"data": big})
        image = await load(client, "noisy.png")
        assert "sr.srnet_x4 output: 512x512" in await error_text(client, "sr", {"image_id": image, "scale": 4})


async def test_progress_is_reported_for_slow_calls(roots, astronaut):
    inputs, outputs = roots
    write_image(np.tile(astronaut, (2, 2, 1)), inputs / "big.png")
    server = build_server(ServerConfig(roots=[inputs], output_root=outputs, progress_after_s=0.05))
    updates = []

    async def on_progress(progress, total, message):
        updates.append((progress, message))

    async with Client(server) as client:
        image = await load(client, "big.png")
        result = await client.call_tool("denoise", {"image_id": image, "model": "bm3d", "sigma": 20}, progress_callback=on_progress)
    assert not result.is_error
    assert updates and "denoise.bm3d: running for" in updates[0][1]


async def test_a_tool_that_fails_inside_the_pool_reports_its_own_message(roots):
    from tiragent.server.registry import register_tool, unregister

    @register_tool(Task.DERAIN, "t_fail", cost="low")
    def fail(image, params):
        """Always raises, to test how failures inside the pool reach the client."""
        raise RuntimeError("kaput")

    try:
        server = build_server(ServerConfig(roots=[roots[0]], output_root=roots[1], progress_after_s=0.01))
        async with Client(server) as client:
            image = await load(client, "noisy.png")
            text = await error_text(client, "derain", {"image_id": image, "model": "t_fail"})
            assert "derain.t_fail failed: RuntimeError: kaput" in text
            assert not (await client.call_tool("derain", {"image_id": image, "model": "opening"})).is_error
    finally:
        unregister("derain.t_fail")


async def test_get_image_at_the_size_the_client_needs(server):
    async with Client(server) as client:
        loaded = await client.call_tool("load_image", {"data": base64.b64encode(encode_image(np.full((100, 60, 3), 0.5, np.float32))).decode()})
        image_id = loaded.structured_content["image_id"]
        small = await client.call_tool("get_image", {"image_id": image_id, "max_side": 50})
        assert (small.structured_content["width"], small.structured_content["height"]) == (30, 50)
        assert decode_image(base64.b64decode(small.content[0].data)).shape == (50, 30, 3)
        full = await client.call_tool("get_image", {"image_id": image_id, "max_side": 4000})
        assert (full.structured_content["width"], full.structured_content["height"]) == (60, 100)
        assert (await client.call_tool("get_image", {"image_id": image_id, "max_side": 2})).is_error
