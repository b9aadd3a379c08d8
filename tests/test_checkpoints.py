"""Users' checkpoints through spandrel: detection, registration, serving, and clear load errors."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
from mcp import Client

from tiragent.images import encode_image
from tiragent.server.app import ServerConfig, build_server
from tiragent.server.checkpoints import register_checkpoints
from tiragent.server.pool import ModelPool, PoolConfig
from tiragent.server.registry import ModelDescriptor, ToolParams, get_tool, unregister

pytestmark = pytest.mark.anyio


def save_dncnn(path, channels: int) -> None:
    from spandrel.architectures.DnCNN import DnCNN

    torch.manual_seed(0)
    torch.save(DnCNN(in_nc=channels, out_nc=channels, nc=8, nb=17).state_dict(), path)  # spandrel detects 17 or 20 layers


@pytest.fixture
def config(tmp_path):
    save_dncnn(tmp_path / "dncnn_color.pth", 3)
    save_dncnn(tmp_path / "dncnn_gray.pth", 1)
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "dncnn_color.pth").read_bytes()[:200])
    torch.save({"mystery.weight": torch.zeros(3, 3)}, tmp_path / "unknown.pth")
    path = tmp_path / "tools.toml"
    path.write_text(
        """
[[tool]]
name = "user_dncnn"
task = "denoise"
checkpoint = "dncnn_color.pth"
cost = "medium"
description = "A user's DnCNN."

[[tool]]
name = "user_gray"
task = "denoise"
checkpoint = "dncnn_gray.pth"

[[tool]]
name = "gone"
task = "denoise"
checkpoint = "missing.pth"

[[tool]]
name = "cut"
task = "denoise"
checkpoint = "truncated.pth"

[[tool]]
name = "odd"
task = "dehaze"
checkpoint = "unknown.pth"
"""
    )
    yield path
    for key in ("denoise.user_dncnn", "denoise.user_gray", "denoise.gone", "denoise.cut", "dehaze.odd"):
        unregister(key)


async def test_checkpoints_register_and_bad_ones_are_named(config):
    registered, errors = register_checkpoints(config)
    assert registered == ["denoise.user_dncnn", "denoise.user_gray"]
    assert any("'gone'" in e and "does not exist" in e for e in errors)
    assert any("'cut'" in e and "cannot load" in e for e in errors)
    assert any("'odd'" in e and "not an architecture spandrel knows" in e for e in errors)
    spec = get_tool("denoise.user_dncnn")
    assert spec.is_torch and spec.descriptor.scale == 1 and spec.description == "A user's DnCNN."
    image = np.random.default_rng(0).random((40, 36, 3), dtype=np.float32)
    async with ModelPool() as pool:
        colour = await pool.call("denoise.user_dncnn", image)
        gray = await pool.call("denoise.user_gray", image)
    assert colour.image.shape == gray.image.shape == image.shape


async def test_the_server_serves_user_checkpoints_and_starts_despite_broken_ones(config, tmp_path, capsys):
    server = build_server(ServerConfig(roots=[tmp_path], tools_config=config, preview_size=0))
    assert "skipped a checkpoint" in capsys.readouterr().err
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert "user_dncnn" in tools["denoise"].input_schema["properties"]["model"]["enum"]
        assert "dcp" in tools["dehaze"].input_schema["properties"]["model"]["enum"]
        loaded = await client.call_tool("load_image", {"data": __import__("base64").b64encode(
            __import__("tiragent.images", fromlist=["encode_image"]).encode_image(np.full((32, 32, 3), 0.5, np.float32))).decode()})
        result = await client.call_tool("denoise", {"image_id": loaded.structured_content["image_id"], "model": "user_dncnn"})
        assert not result.is_error and result.structured_content["model"] == "user_dncnn"


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[tool]]\nname = "x"\ntask = "paint"\ncheckpoint = "a.pth"\n')
    assert "unknown task 'paint'" in register_checkpoints(bad)[1][0]
    bad.write_text("[[tool]]\nname = 3 4\n")
    assert "cannot read the tools config" in register_checkpoints(bad)[1][0]
    bad.write_text('[[tool]]\nname = "x"\n')
    assert "lacks task, checkpoint" in register_checkpoints(bad)[1][0]


async def test_an_upscaling_checkpoint_keeps_its_scale(tmp_path):
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    torch.save(Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2).state_dict(), tmp_path / "compact_x2.pth")
    (tmp_path / "tools.toml").write_text('[[tool]]\nname = "user_compact"\ntask = "sr"\ncheckpoint = "compact_x2.pth"\n')
    try:
        assert register_checkpoints(tmp_path / "tools.toml") == (["sr.user_compact"], [])
        assert get_tool("sr.user_compact").descriptor.scale == 2
        async with ModelPool() as pool:
            result = await pool.call("sr.user_compact", np.full((30, 20, 3), 0.5, np.float32))
        assert result.image.shape == (60, 40, 3)
    finally:
        unregister("sr.user_compact")


async def test_a_restormer_checkpoint_loads_through_the_extra_architectures(tmp_path):
    # Restormer is not in spandrel itself: it comes from spandrel-extra-arches, installed at load time.
    from spandrel_extra_arches.architectures.Restormer import Restormer

    torch.manual_seed(0)
    net = Restormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2], ffn_expansion_factor=1.0)
    torch.save({"params": net.state_dict()}, tmp_path / "restormer.pth")  # the official releases wrap weights in "params"
    (tmp_path / "tools.toml").write_text('[[tool]]\nname = "user_restormer"\ntask = "derain"\ncheckpoint = "restormer.pth"\n')
    try:
        assert register_checkpoints(tmp_path / "tools.toml") == (["derain.user_restormer"], [])
        spec = get_tool("derain.user_restormer")
        assert spec.descriptor.multiple_of == 8 and spec.description.startswith("Restormer")
        image = np.random.default_rng(0).random((37, 45, 3), dtype=np.float32)
        async with ModelPool() as pool:
            result = await pool.call("derain.user_restormer", image)
        assert result.image.shape == image.shape
        # its channel attention spans the whole image, so pad exactly as the pool does (to a multiple of 8)
        padded = torch.from_numpy(np.pad(image, ((0, 3), (0, 3), (0, 0)), mode="symmetric")).permute(2, 0, 1)[None]
        with torch.no_grad():
            expected = net.eval()(padded)[0, :, :37, :45].clamp(0, 1).permute(1, 2, 0).numpy()
        assert np.abs(result.image - expected).max() < 1e-4  # the detected network is the saved one
    finally:
        unregister("derain.user_restormer")


def test_without_the_extra_architectures_the_error_names_the_extra(tmp_path, monkeypatch):
    from tiragent.server import checkpoints

    monkeypatch.setattr(checkpoints, "_install_extra_arches", lambda: False)
    torch.save({"encoder.weight": torch.zeros(4, 3)}, tmp_path / "odd.pth")
    (tmp_path / "tools.toml").write_text('[[tool]]\nname = "odd"\ntask = "derain"\ncheckpoint = "odd.pth"\n')
    registered, errors = register_checkpoints(tmp_path / "tools.toml")
    assert registered == [] and "not an architecture spandrel knows" in errors[0] and "tir-agent[extra-arches]" in errors[0]


def save_fp16(net: torch.nn.Module, path) -> None:
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, path)


@pytest.fixture
def conventions(tmp_path):
    """Random-weight checkpoints of architectures with their own calling convention or size rule."""
    from spandrel.architectures.DRUNet import DRUNet
    from spandrel.architectures.FBCNN import FBCNN
    from spandrel.architectures.Uformer import Uformer

    torch.manual_seed(0)
    save_fp16(DRUNet(in_nc=4, out_nc=3, nc=[8, 16, 32, 64], nb=2), tmp_path / "drunet.pth")  # takes a noise-level channel
    save_fp16(FBCNN(nc=[8, 16, 32, 512], nb=2), tmp_path / "fbcnn.pth")  # returns (image, quality); 512 is fixed by its heads
    save_fp16(Uformer(embed_dim=8, depths=[1] * 9, num_heads=[1] * 9, win_size=4), tmp_path / "uformer.pth")  # square, multiple of 128
    (tmp_path / "tools.toml").write_text(
        '[[tool]]\nname = "user_drunet"\ntask = "denoise"\ncheckpoint = "drunet.pth"\n'
        '[[tool]]\nname = "user_fbcnn"\ntask = "dejpeg"\ncheckpoint = "fbcnn.pth"\n'
        '[[tool]]\nname = "user_uformer"\ntask = "derain"\ncheckpoint = "uformer.pth"\n'
    )
    yield tmp_path / "tools.toml"
    for key in ("denoise.user_drunet", "dejpeg.user_fbcnn", "derain.user_uformer"):
        unregister(key)


async def test_checkpoints_run_with_their_own_calling_convention_over_mcp(conventions, tmp_path):
    server = build_server(ServerConfig(roots=[tmp_path], tools_config=conventions, preview_size=0))
    uformer = get_tool("derain.user_uformer").descriptor
    assert uformer.square and uformer.multiple_of == 128 and not uformer.supports_half and uformer.supports_bfloat16
    assert uformer.padded(130, 60) == (256, 256)
    image = np.random.default_rng(1).random((70, 130, 3), dtype=np.float32)
    data = base64.b64encode(encode_image(image)).decode()
    async with Client(server) as client:
        image_id = (await client.call_tool("load_image", {"data": data})).structured_content["image_id"]
        for task, model in (("denoise", "user_drunet"), ("dejpeg", "user_fbcnn"), ("derain", "user_uformer")):
            result = await client.call_tool(task, {"image_id": image_id, "model": model})
            assert not result.is_error, result.content
            assert (result.structured_content["width"], result.structured_content["height"]) == (130, 70)


def test_tiling_advice_is_kept():
    from spandrel import ModelTiling, SizeRequirements

    from tiragent.server.checkpoints import descriptor_of

    class Loaded:  # what descriptor_of reads from a spandrel ImageModelDescriptor
        scale, supports_half, supports_bfloat16 = 1, True, False
        size_requirements = SizeRequirements(minimum=16, multiple_of=4, square=True)

    for tiling, tile_size in ((ModelTiling.SUPPORTED, 512), (ModelTiling.DISCOURAGED, 512), (ModelTiling.INTERNAL, None)):
        Loaded.tiling = tiling
        d = descriptor_of(Loaded)
        assert (d.tiling, d.tile_size) == (tiling.name.lower(), tile_size)
        assert (d.min_size, d.multiple_of, d.square, d.supports_half, d.supports_bfloat16) == (16, 4, True, True, False)


async def test_discouraged_tiling_tiles_only_very_large_inputs():
    from tiragent.server.registry import register_torch_tool

    shapes = []

    class Record(torch.nn.Module):
        def forward(self, x):
            shapes.append(tuple(x.shape[-2:]))
            return x

    register_torch_tool("denoise", "t_global", cost="low", descriptor=ModelDescriptor(tile_size=64, tiling="discouraged"), description="t")(Record)
    register_torch_tool("denoise", "t_local", cost="low", descriptor=ModelDescriptor(tile_size=64), description="t")(Record)
    try:
        async with ModelPool() as pool:
            await pool.call("denoise.t_global", np.zeros((100, 120, 3), np.float32))
            assert shapes == [(100, 120)]
            await pool.call("denoise.t_local", np.zeros((100, 120, 3), np.float32))
            assert len(shapes) > 2 and set(shapes[1:]) == {(64, 64)}
    finally:
        unregister("denoise.t_global")
        unregister("denoise.t_local")


def test_half_precision_only_where_declared(monkeypatch):
    from tiragent.server.pool import ModelCache
    from tiragent.server.registry import ToolSpec

    def spec(**flags):
        return ToolSpec("denoise", "x", "x", "low", ToolParams, "accelerator", build=lambda: None, descriptor=ModelDescriptor(**flags))

    cache = ModelCache("cuda", 2**30, half=True)
    for bf16_gpu in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16_gpu=bf16_gpu: bf16_gpu)
        assert cache.dtype_for(spec(supports_half=False, supports_bfloat16=False)) is None
        assert cache.dtype_for(spec(supports_half=True, supports_bfloat16=True)) == (torch.bfloat16 if bf16_gpu else torch.float16)
        assert cache.dtype_for(spec(supports_half=False, supports_bfloat16=True)) == (torch.bfloat16 if bf16_gpu else None)
        assert cache.dtype_for(spec(supports_half=True, supports_bfloat16=False)) == torch.float16
    assert ModelCache("cpu", 2**30, half=True).dtype_for(spec()) is None
    assert ModelCache("cuda", 2**30, half=False).dtype_for(spec()) is None


async def test_evicting_a_model_frees_it(config):
    """The memory budget counts an evicted model as freed: nothing may keep it alive."""
    import gc
    import weakref

    register_checkpoints(config)
    image = np.full((16, 16, 3), 0.5, np.float32)
    async with ModelPool(PoolConfig(memory_budget_mb=0.05)) as pool:  # room for one of the two DnCNNs (~30 kB each)
        await pool.call("denoise.user_dncnn", image)
        # the weights themselves, not the wrapper: a registered closure used to keep the inner network alive
        first = weakref.ref(next(pool.cache._models["denoise.user_dncnn"][0].parameters()))
        await pool.call("denoise.user_gray", image)
        assert pool.cache.resident() == ["denoise.user_gray"] and pool.cache.evictions == 1
        gc.collect()
        assert first() is None, gc.get_referrers(first())
