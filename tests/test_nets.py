"""The project's networks and their self-describing safetensors files."""

from __future__ import annotations

import pytest
import torch

from tiragent.server.nets import WeightsError, build_net, count_parameters, descriptor, load_net, read_info, save_net


@pytest.mark.parametrize(
    ("arch", "config", "size", "out"),
    [
        ("resunet", {"width": 8, "blocks": [1, 1, 1], "unshuffle": 2}, 48, 48),
        ("resunet", {"width": 8, "blocks": [1, 2], "unshuffle": 1}, 20, 20),
        ("srnet", {"scale": 4, "width": 8, "blocks": 2}, 13, 52),
        ("srnet", {"scale": 2, "width": 8, "blocks": 1}, 10, 20),
    ],
)
def test_shapes_and_descriptor(arch, config, size, out):
    net = build_net(arch, **config)
    k = net.config.multiple_of
    assert size % k == 0
    y = net(torch.rand(2, 3, size, size))
    assert y.shape == (2, 3, out, out)
    d = descriptor(net.config)
    assert d.scale == out // size and d.multiple_of == k


def test_resunet_multiple_follows_depth():
    assert build_net("resunet", width=8, blocks=[1, 1, 1], unshuffle=2).config.multiple_of == 8
    assert build_net("resunet", width=8, blocks=[1], unshuffle=1).config.multiple_of == 1


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = build_net("resunet", width=8, blocks=[1, 1], unshuffle=2).eval()
    path = tmp_path / "w.safetensors"
    save_net(net, path, {"tool": "denoise.test", "steps": 3})
    info = read_info(path)
    assert info.arch == "resunet" and info.config == net.config and info.card == {"tool": "denoise.test", "steps": 3}
    loaded = load_net(path)
    assert count_parameters(loaded) == count_parameters(net)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=2e-3)  # stored in fp16
    assert path.stat().st_size < count_parameters(net) * 2 + 4096


def test_bad_files_are_named(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_net(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_net(tmp_path / "junk.safetensors")
    net = build_net("srnet", scale=2, width=8, blocks=1)
    save_net(net, tmp_path / "sr.safetensors")
    data = (tmp_path / "sr.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_net(tmp_path / "cut.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(WeightsError, match="no 'arch' metadata"):
        load_net(tmp_path / "plain.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "wrong.safetensors"), metadata={"arch": "srnet", "config": '{"width": 8}'})
    with pytest.raises(WeightsError, match="do not fit"):
        load_net(tmp_path / "wrong.safetensors")


def test_unknown_architecture_and_option():
    with pytest.raises(WeightsError, match="unknown architecture 'vit'"):
        build_net("vit")
    with pytest.raises(WeightsError, match="no option depth"):
        build_net("resunet", depth=3)


def test_srnet_self_ensemble_averages_the_eight_orientations_at_inference_only():
    torch.manual_seed(0)
    plain = build_net("srnet", scale=2, width=8, blocks=1).eval()
    ensemble = build_net("srnet", scale=2, width=8, blocks=1, self_ensemble=True).eval()
    ensemble.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 12, 10)  # not square: every rotation changes the shape
    with torch.no_grad():
        y, mean = plain(x), ensemble(x)
        turned = ensemble(torch.rot90(x, 1, (2, 3)).flip(3))
    assert mean.shape == y.shape and not torch.allclose(mean, y, atol=1e-4)  # a random network prefers an orientation
    assert torch.allclose(turned, torch.rot90(mean, 1, (2, 3)).flip(3), atol=1e-5)  # the mean does not
    assert torch.allclose(ensemble.train()(x), plain.train()(x))  # training runs the network once
    torch.nn.init.zeros_(ensemble.tail[0].weight), torch.nn.init.zeros_(ensemble.tail[0].bias)
    with torch.no_grad():  # the bicubic path alone has no preferred orientation: the mean is that upscale
        base = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        assert torch.allclose(ensemble.eval()(x), base, atol=1e-5)


def test_resunet_self_ensemble_has_no_preferred_orientation():
    torch.manual_seed(0)
    net = build_net("resunet", width=8, blocks=[1, 1], unshuffle=2, self_ensemble=True).eval()
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        mean = net(x)
        assert mean.shape == x.shape and not torch.allclose(mean, net.restore(x), atol=1e-4)
        assert torch.allclose(net(torch.rot90(x, 1, (2, 3))), torch.rot90(mean, 1, (2, 3)), atol=1e-5)
    assert torch.allclose(net.train()(x), net.restore(x))
