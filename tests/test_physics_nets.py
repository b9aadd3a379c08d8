"""The networks that estimate a physical model and invert it: the motion-kernel estimator, the whole-frame dehazer and the
whole-frame tone curve."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiragent.eval.degradations import dark, haze, motion_blur
from tiragent.eval.degradations import guided_filter as guided_filter_numpy
from tiragent.eval.kernels import LINE_PROFILES, line_taps, taps_spread
from tiragent.eval.randomized import motion, motion_taps
from tiragent.server.curve_net import apply_curve, cumulative_histogram
from tiragent.server.haze_net import guided_filter
from tiragent.server.kernel_net import normalised_gradients
from tiragent.server.nets import build_net, descriptor
from tiragent.train.tool_trainer import psnr


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


def as_image(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).numpy()


def test_both_run_on_whole_frames_in_full_precision():
    for arch in ("motionkernel", "hazenet", "curvenet"):
        d = descriptor(build_net(arch).config)
        assert d.tile_size is None and not d.supports_half and d.scale == 1


def test_gradients_are_contrast_normalised(astronaut):
    x = as_tensor(astronaut)
    assert torch.allclose(normalised_gradients(x), normalised_gradients(0.3 * x + 0.2), rtol=1e-2, atol=1e-2)
    assert normalised_gradients(x).pow(2).mean().item() == pytest.approx(1.0, rel=1e-2)


@pytest.mark.parametrize("angle", [20.0, -65.0])
def test_kernel_net_deblurs_along_its_axis_and_finds_the_trail_direction(astronaut, angle, monkeypatch):
    """Given the true axis (the estimator's job), the sparsity choice finds direction and length."""
    blurred, _ = motion_blur(astronaut, np.random.default_rng(0), radius=10, sigma=3.0, angle=angle)
    net = build_net("motionkernel", width=4, view=128)
    monkeypatch.setattr(net, "kernels", lambda x: [(angle if angle <= 90 else angle - 180, 0.0, -1)])
    restored = as_image(net(as_tensor(blurred)))
    assert psnr(restored, astronaut) > psnr(blurred, astronaut) + 8
    monkeypatch.setattr(net, "kernels", lambda x: [(angle + 45, 0.0, -1)])  # a wrong axis does far worse
    assert psnr(as_image(net(as_tensor(blurred))), astronaut) < psnr(restored, astronaut) - 5


def test_kernel_net_axis_is_read_from_its_vote(monkeypatch):
    net = build_net("motionkernel", width=4)
    a = math.radians(2 * 30.0)
    monkeypatch.setattr(net, "read", lambda x: (torch.tensor([[math.cos(a), math.sin(a)]] * len(x)), None))
    assert net.axes(torch.rand(2, 3, 40, 40)) == pytest.approx([30.0, 30.0])
    degraded = torch.rand(1, 3, 40, 40)
    trail = {"radius": 10, "sigma": 3.0}
    assert net.training_loss(degraded, degraded, [{"angle": 30.0, **trail}]).item() == pytest.approx(0.0, abs=1e-6)
    assert net.training_loss(degraded, degraded, [{"angle": -60.0, **trail}]).item() == pytest.approx(2.0)  # the perpendicular axis


def test_trail_spread_is_one_length_measure_for_every_profile():
    offsets, weights = line_taps("box", 12)
    assert taps_spread(offsets, weights) == pytest.approx(math.sqrt((12**2 - 1) / 12))
    assert taps_spread(*line_taps("one_sided", 20)) == pytest.approx(taps_spread(*motion_taps({"radius": 10, "sigma": 5.0})))
    spreads = [taps_spread(*line_taps(profile, 24)) for profile in LINE_PROFILES]
    assert max(spreads) < 8 and min(spreads) > 2 and len(set(spreads)) == 3
    assert motion_taps({"variant": "shake", "length": 20, "angle": 0.0}) is None  # a curved path has no straight trail


@pytest.mark.parametrize("variant", ["box", "gaussian", "one_sided"])
def test_kernel_net_deblurs_with_an_estimated_spread(astronaut, variant, monkeypatch):
    """Given the axis, the spread and the profile (the estimator's job), the trail is rebuilt and its direction chosen;
    a spread far off does worse."""
    blurred, params = motion(astronaut, np.random.default_rng(0), variant=variant, length=11, angle=25.0)
    spread, profile = taps_spread(*motion_taps(params)), LINE_PROFILES.index(variant)
    net = build_net("motionkernel", width=4, view=128, spread=True)
    monkeypatch.setattr(net, "kernels", lambda x: [(25.0, spread, profile)])
    restored = psnr(as_image(net(as_tensor(blurred))), astronaut)
    assert restored > psnr(blurred, astronaut) + 3
    monkeypatch.setattr(net, "kernels", lambda x: [(25.0, spread * 2.5, profile)])
    assert psnr(as_image(net(as_tensor(blurred))), astronaut) < restored - 3


def test_kernel_net_spread_loss_is_the_log_error_over_straight_trails(monkeypatch):
    net = build_net("motionkernel", width=4, spread=True)
    box = {"variant": "box", "length": 15, "angle": 30.0}
    a, spread = math.radians(60.0), taps_spread(*motion_taps(box))
    sure = [math.log(2 * spread), 30.0, -30.0, -30.0]  # twice the spread; certain of the box profile
    monkeypatch.setattr(net, "read", lambda x: (torch.tensor([[math.cos(a), math.sin(a)]] * len(x)), torch.tensor([sure] * len(x))))
    degraded = torch.rand(2, 3, 40, 40)
    shake = {"variant": "shake", "length": 15, "angle": -60.0}  # neither axis nor length: left out
    assert net.training_loss(degraded, degraded, [box, shake]).item() == pytest.approx(math.log(2), rel=1e-5)
    one_sided = {"radius": 10, "sigma": 3.0, "angle": 30.0}  # the protocol's trail: one-sided, here called a box
    assert net.training_loss(degraded[:1], degraded[:1], [one_sided]).item() > 50


def fit(net: torch.nn.Module, degraded: torch.Tensor, clean: torch.Tensor, params: list[dict], steps: int) -> tuple[float, float]:
    """The training loss on one batch before and after ``steps`` Adam steps on it."""
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    before = net.training_loss(degraded, clean, params).item()
    for _ in range(steps):
        loss = net.training_loss(degraded, clean, params)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return before, loss.item()


def test_kernel_net_learns_the_spread_of_a_batch():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    texture = np.repeat(rng.random((64, 64, 1), dtype=np.float32), 3, axis=2)
    params = [{"variant": v, "length": n, "angle": 0.0} for v, n in (("box", 5), ("gaussian", 9), ("one_sided", 17), ("box", 31))]
    degraded = torch.cat([as_tensor(motion(texture, rng, **p)[0]) for p in params])
    before, after = fit(build_net("motionkernel", width=8, spread=True), degraded, degraded, params, 200)
    assert after < min(0.3, before / 3)


def test_kernel_net_learns_the_axis_of_a_batch():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    texture = np.repeat(rng.random((48, 48, 1), dtype=np.float32), 3, axis=2)
    params = [{"angle": a, "sigma": 3.0, "radius": 10} for a in (0.0, 45.0, 90.0, -45.0)]
    degraded = torch.cat([as_tensor(motion_blur(texture, rng, **p)[0]) for p in params])
    before, after = fit(build_net("motionkernel", width=8), degraded, degraded, params, 60)
    assert after < min(0.2, before / 3)


def test_guided_filter_matches_the_numpy_one_away_from_the_border(astronaut):
    gray = astronaut.mean(axis=2).astype(np.float32)
    src = np.random.default_rng(0).random(gray.shape, dtype=np.float32)
    expected = guided_filter_numpy(gray, src, radius=4, eps=1e-3)
    got = guided_filter(torch.from_numpy(gray)[None, None], torch.from_numpy(src)[None, None], radius=4, eps=1e-3)[0, 0].numpy()
    assert np.abs(got - expected)[10:-10, 10:-10].max() < 1e-4


def test_haze_net_inverts_the_scattering_model_given_its_estimate(astronaut, monkeypatch):
    """J = (I - A) / t + A: with the synthesis's own transmission and airlight, the haze comes off."""
    from tiragent.eval.degradations import estimate_depth

    hazy, params = haze(astronaut, np.random.default_rng(0), airlight=0.9, beta=1.2)
    t = torch.from_numpy(np.exp(-1.2 * estimate_depth(astronaut)))[None, None]
    net = build_net("hazenet", width=4, size=32)
    monkeypatch.setattr(net, "estimate", lambda x: (t, torch.full((1, 3, 1, 1), 0.9)))
    assert psnr(as_image(net(as_tensor(hazy))), astronaut) > 45 > psnr(hazy, astronaut) + 25


def test_haze_net_estimate_is_physical_at_any_size():
    net = build_net("hazenet", width=4, size=32, t_min=0.2)
    for h, w in ((50, 70), (128, 128)):
        with torch.no_grad():
            t, airlight = net.estimate(torch.rand(2, 3, h, w))
        assert t.shape == (2, 1, h, w) and airlight.shape == (2, 3, 1, 1)
        assert float(t.min()) >= 0.2 and float(t.max()) <= 1.0 and 0 < float(airlight.min()) <= float(airlight.max()) < 1
    with torch.no_grad():
        y = net(torch.rand(1, 3, 50, 70))
    assert y.shape == (1, 3, 50, 70) and 0 <= float(y.min()) and float(y.max()) <= 1


def test_curve_net_starts_at_the_identity_and_stays_monotone():
    net = build_net("curvenet", width=4, size=32)
    x = torch.rand(2, 3, 50, 70)
    with torch.no_grad():
        assert (net(x) - x).abs().max().item() < 0.01
        torch.nn.init.normal_(net.head[-1].weight, std=3.0)  # any estimate at all: still a monotone curve from a black level
        curve = net.curve(x)
    assert curve.shape == (2, 65) and bool((curve.diff(dim=1) >= 0).all()) and 0 <= float(curve[:, 0].min()) <= 0.25


def test_curve_inverts_gamma_darkening_given_the_true_curve(astronaut):
    """The application half of the tool: with the synthesis's own inverse, the darkening comes off every channel."""
    darkened, params = dark(astronaut, np.random.default_rng(0), mode="gamma", gamma=0.5)
    knots = torch.linspace(0, 1, 65)[None] ** params["gamma"]
    restored = as_image(apply_curve(as_tensor(darkened), knots))
    assert psnr(restored, astronaut) > 40 > psnr(darkened, astronaut) + 20


def test_cumulative_histogram_counts_luminance():
    x = torch.cat([torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)], dim=3)  # half black, half white
    assert cumulative_histogram(x, 4).tolist() == [[0.5, 0.5, 0.5, 1.0]]


def test_curve_net_learns_to_undo_a_darkening():
    torch.manual_seed(0)
    clean = torch.rand(4, 3, 32, 32)
    darkened = clean * torch.tensor([0.3, 0.5, 0.4, 0.6]).view(4, 1, 1, 1)
    before, after = fit(build_net("curvenet", width=8, size=32), darkened, clean, [], 80)
    assert after < before / 3
