"""The error promise, kept everywhere: one line naming the problem (exit status 2 on the command line),
tool errors over MCP, and a server that starts despite broken parts."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from mcp import Client
from PIL import Image, ImageOps

from tiragent.cli import main
from tiragent.images import decode_image, encode_image
from tiragent.server.app import ServerConfig, build_server
from tiragent.server.registry import get_tool, list_tools, unregister
from tiragent.server.tools import learned
from tiragent.tasks import TASK_TOOL_META

pytestmark = pytest.mark.anyio


def b64(image: np.ndarray) -> str:
    return base64.b64encode(encode_image(image)).decode()


async def test_unknown_arguments_are_refused_by_name(tmp_path, astronaut):
    server = build_server(ServerConfig(roots=[tmp_path], preview_size=0))
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert all(t.input_schema.get("additionalProperties") is False for t in tools.values())
        image_id = (await client.call_tool("load_image", {"data": b64(astronaut)})).structured_content["image_id"]
        for args, bad in (({"model": "unet", "bogus": 1}, "'bogus'"), ({"model": "nlm", "sigam": 25}, "'sigam'")):
            result = await client.call_tool("denoise", {"image_id": image_id, **args})
            assert result.is_error
            text = result.content[0].text
            assert f"denoise takes no argument {bad}" in text and "image_id, model, sigma" in text
        extra = await client.call_tool("load_image", {"data": b64(astronaut), "colour": "red"})
        assert extra.is_error and "load_image takes no argument 'colour'" in extra.content[0].text
        fine = await client.call_tool("denoise", {"image_id": image_id, "model": "nlm", "sigma": 25})  # the session goes on
        assert not fine.is_error


def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert main(["tools", "list", "--task", "denoize"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown task 'denoize'" in err and "did you mean 'denoise'" in err

    manifests = {
        "task": '[[source]]\nname = "x"\ntask = "paint"\narch = "a"\nurl = "u"\nsha256 = "0"\nlicence = "l"\n',
        "field": '[[source]]\nname = "x"\ntask = "sr"\narch = "a"\nurl = "u"\nsha256 = "0"\nlicence = "l"\nmirror = "m"\n',
        "array": 'source = 3\n',
        "toml": '[[source]\n',
    }
    expected = {"task": "unknown task 'paint'", "field": "unknown field 'mirror'", "array": "array of tables", "toml": "cannot read"}
    for kind, text in manifests.items():
        path = tmp_path / f"{kind}.toml"
        path.write_text(text)
        assert main(["tools", "sources", "--manifest", str(path)]) == 2, kind
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected[kind] in err, (kind, err)


def test_a_bad_cost_skips_that_checkpoint_and_the_server_starts(tmp_path, capsys):
    import torch
    from spandrel.architectures.DnCNN import DnCNN

    torch.save(DnCNN(in_nc=3, out_nc=3, nc=8, nb=17).state_dict(), tmp_path / "dncnn.pth")
    config = tmp_path / "tools.toml"
    config.write_text(
        '[[tool]]\nname = "pricey"\ntask = "denoise"\ncheckpoint = "dncnn.pth"\ncost = "expensive"\n'
        '[[tool]]\nname = "fine"\ntask = "denoise"\ncheckpoint = "dncnn.pth"\n'
    )
    try:
        build_server(ServerConfig(roots=[tmp_path], tools_config=config))
        err = capsys.readouterr().err
        assert "tool 'pricey' has unknown cost 'expensive'; costs: low, medium, high" in err
        assert get_tool("denoise.fine").cost == "high"
        assert "pricey" not in {s.name for s in list_tools("denoise")}
    finally:
        unregister("denoise.fine")


async def test_a_damaged_weights_file_leaves_its_model_out_and_the_default_moves_on(tmp_path, astronaut):
    damaged = tmp_path / "weights"
    damaged.mkdir()
    (damaged / "denoise_unet.safetensors").write_bytes((learned.WEIGHTS_DIR / "denoise_unet.safetensors").read_bytes()[:5000])
    unregister("denoise.unet")
    try:
        missing = learned.register_shipped(damaged)
        assert "denoise_unet" in missing and "not a readable safetensors file" in missing["denoise_unet"]
        assert "unet" not in {s.name for s in list_tools("denoise")}
        server = build_server(ServerConfig(roots=[tmp_path], preview_size=0))
        async with Client(server) as client:
            tool = next(t for t in (await client.list_tools()).tools if t.name == "denoise")
            assert tool.input_schema["properties"]["model"]["default"] == "nlm" == tool.meta[TASK_TOOL_META]["default"]
            image_id = (await client.call_tool("load_image", {"data": b64(astronaut)})).structured_content["image_id"]
            result = await client.call_tool("denoise", {"image_id": image_id})  # no model given: the next default runs
            assert not result.is_error and result.structured_content["model"] == "nlm"
    finally:
        unregister("denoise.unet")
        learned.register_weights(learned.WEIGHTS_DIR / "denoise_unet.safetensors", learned.SHIPPED["denoise_unet"])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured(orientation, astronaut):
    photo = Image.fromarray((astronaut[:, :96] * 255).astype(np.uint8))  # 128 x 96: a rotation changes the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=95, exif=exif)
    decoded = decode_image(buffer.getvalue())
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue())))).astype(np.float32) / 255
    assert decoded.shape == upright.shape == ((128, 96, 3) if orientation < 5 else (96, 128, 3))
    assert np.abs(decoded - upright).max() < 2 / 255
