"""Each built-in tool on its own degradation: output shape, range, and (where the method is reliable) a real gain."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import psnr

from tiragent.eval.degradations import degradation_for, degrade
from tiragent.server.registry import list_tools

FAST = [s for s in list_tools() if s.cost.value != "high" and not s.is_torch]  # learned tools: test_learned_tools.py


@pytest.mark.parametrize("spec", FAST, ids=lambda s: s.key)
def test_tool_output_is_a_valid_image(spec, astronaut):
    degraded, _ = degrade(astronaut, [degradation_for(spec.task).name], seed=0)
    out = spec.run(degraded, spec.validate({}))
    scale = spec.output_scale(spec.validate({}))
    assert out.shape == (degraded.shape[0] * scale, degraded.shape[1] * scale, 3)
    assert out.dtype == np.float32 and np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


GAINS = [
    ("denoise.wavelet", "noise", {"kind": "gaussian", "sigma": 30}, {}),
    ("denoise.nlm", "noise", {"kind": "gaussian", "sigma": 30}, {}),
    ("dehaze.dcp", "haze", {"airlight": 0.9, "beta": 1.2}, {}),
    ("dehaze.cap", "haze", {"airlight": 0.9, "beta": 1.2}, {}),
    ("lowlight.gamma", "dark", {"mode": "gamma", "gamma": 0.6}, {"gamma": 0.6}),
    ("lowlight.retinex", "dark", {"mode": "shift", "shift": 40}, {}),
    ("defocus_deblur.wiener", "defocus", {"radius": 3}, {"radius": 3}),
    ("motion_deblur.wiener", "motion", {"radius": 10, "sigma": 3.0, "angle": 30}, {"sigma": 3.0, "angle": 30}),
]


@pytest.mark.parametrize("key,degradation,dparams,tparams", GAINS, ids=[g[0] for g in GAINS])
def test_tool_improves_its_own_degradation(key, degradation, dparams, tparams, astronaut):
    from tiragent.server.registry import get_tool

    spec = get_tool(key)
    degraded, _ = degrade(astronaut, [degradation], seed=1, params={degradation: dparams})
    out = spec.run(degraded, spec.validate(tparams))
    assert psnr(out, astronaut) > psnr(degraded, astronaut) + 1.0


def test_super_resolution_beats_nearest_neighbour(astronaut):
    from tiragent.server.registry import get_tool

    small, _ = degrade(astronaut, ["lowres"])
    nearest = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)
    for key in ("sr.lanczos", "sr.backprojection"):
        spec = get_tool(key)
        assert psnr(spec.run(small, spec.validate({"scale": 4})), astronaut) > psnr(nearest, astronaut) + 1.0


def test_bm3d_denoises(astronaut):
    from tiragent.server.registry import get_tool

    spec = get_tool("denoise.bm3d")
    noisy, _ = degrade(astronaut[:64, :64], ["noise"], params={"noise": {"kind": "gaussian", "sigma": 30}})
    assert psnr(spec.run(noisy, spec.validate({"sigma": 30})), astronaut[:64, :64]) > psnr(noisy, astronaut[:64, :64]) + 3


def test_derain_removes_streaks():
    from skimage import data
    from skimage.transform import resize

    from tiragent.server.registry import get_tool

    clean = resize(data.astronaut(), (256, 256), anti_aliasing=True).astype(np.float32)
    rainy, _ = degrade(clean, ["rain"], seed=2, params={"rain": {"length": 25, "angle": 10, "density": 80}})
    gains = {}
    for key in ("derain.opening", "derain.inpaint"):
        spec = get_tool(key)
        gains[key] = psnr(spec.run(rainy, spec.validate({})), clean) - psnr(rainy, clean)
    assert gains["derain.opening"] > 2.0 and gains["derain.inpaint"] > 0.5, gains
