from __future__ import annotations

import numpy as np
import pytest
from conftest import psnr

from tiragent.errors import ParameterError, ToolNotFoundError
from tiragent.eval.bench import COMBINATIONS
from tiragent.eval.degradations import DEGRADATIONS, degradation_for, degrade, estimate_depth, get_degradation
from tiragent.eval.kernels import disk_kernel, motion_kernel

ALL = ["lowres", "noise", "jpeg", "dark", "haze", "motion", "defocus", "rain"]


def test_the_eight_degradations_are_registered():
    assert sorted(DEGRADATIONS) == sorted(ALL)
    tasks = {d.task for d in DEGRADATIONS.values()}
    assert tasks == {"sr", "denoise", "dejpeg", "lowlight", "dehaze", "motion_deblur", "defocus_deblur", "derain"}


@pytest.mark.parametrize("name", ALL)
def test_each_degradation_changes_the_image_and_is_reproducible(name, astronaut):
    a, rec_a = degrade(astronaut, [name], seed=3)
    b, rec_b = degrade(astronaut, [name], seed=3)
    c, _ = degrade(astronaut, [name], seed=4)
    assert np.array_equal(a, b) and rec_a == rec_b
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    if name != "lowres":
        assert a.shape == astronaut.shape
        assert psnr(a, astronaut) < 40
    assert not np.array_equal(a, c) or name == "lowres"


def test_lowres_is_bicubic_quarter(astronaut):
    out, rec = degrade(astronaut, ["lowres"], seed=0)
    assert out.shape == (32, 32, 3)
    assert rec[0]["params"] == {"scale": 4}


def sample(name, seeds=range(60), image=None):
    image = np.full((40, 40, 3), 0.5, np.float32) if image is None else image
    return [degrade(image, [name], seed=s)[1][0]["params"] for s in seeds]


def test_sampled_parameters_stay_in_the_protocol_ranges():
    noise = sample("noise")
    assert {p["kind"] for p in noise} == {"gaussian", "poisson"}
    assert all(20 <= p["sigma"] <= 50 for p in noise if p["kind"] == "gaussian")
    assert all(1 <= p["scale"] <= 3 for p in noise if p["kind"] == "poisson")
    assert all(10 <= p["quality"] <= 29 for p in sample("jpeg"))
    dark = sample("dark")
    assert {p["mode"] for p in dark} == {"shift", "gamma", "max"}
    assert all(30 <= p["shift"] <= 49 for p in dark if p["mode"] == "shift")
    assert all(0.5 <= p["gamma"] <= 0.7 for p in dark if p["mode"] == "gamma")
    assert all(100 <= p["max_value"] <= 149 for p in dark if p["mode"] == "max")
    haze = sample("haze")
    assert all(0.7 <= p["airlight"] <= 1.0 and 0.6 <= p["beta"] <= 1.8 for p in haze)
    motion = sample("motion")
    assert {(p["radius"], p["sigma"]) for p in motion} == {(10, 3.0), (15, 5.0), (15, 8.0)}
    assert all(-90 <= p["angle"] <= 90 for p in motion)
    assert {p["radius"] for p in sample("defocus")} == {3.0, 4.0, 6.0}
    rain = sample("rain")
    assert all(20 <= p["length"] <= 39 and -30 <= p["angle"] <= 29 and 50 <= p["density"] <= 99 for p in rain)


def test_dark_modes_darken(astronaut):
    for mode in ("shift", "gamma", "max"):
        out, _ = degrade(astronaut, ["dark"], params={"dark": {"mode": mode}})
        assert out.mean() < astronaut.mean() - 0.05


def test_explicit_parameters_are_used_and_checked(astronaut):
    _, rec = degrade(astronaut, ["noise"], params={"noise": {"kind": "gaussian", "sigma": 30}})
    assert rec[0]["params"] == {"kind": "gaussian", "sigma": 30.0}
    with pytest.raises(ParameterError, match="sigma=300.0 is out of range"):
        degrade(astronaut, ["noise"], params={"noise": {"kind": "gaussian", "sigma": 300}})


def test_order_is_kept_and_recorded(astronaut):
    out, rec = degrade(astronaut, ["motion", "lowres"], seed=1)
    assert [r["degradation"] for r in rec] == ["motion", "lowres"]
    assert out.shape == (32, 32, 3)


def test_unknown_degradation_suggests_a_name(astronaut):
    with pytest.raises(ToolNotFoundError, match="did you mean 'noise'"):
        degrade(astronaut, ["noice"])
    assert get_degradation("low-res").name == "lowres"


def test_haze_depth_and_transmission(astronaut):
    depth = estimate_depth(astronaut)
    assert depth.shape == astronaut.shape[:2] and 0 <= depth.min() and depth.max() <= 1
    assert depth[:10].mean() > depth[-10:].mean()  # the top of the frame is farther
    out, _ = degrade(astronaut, ["haze"], params={"haze": {"airlight": 1.0, "beta": 1.5}})
    assert out.std() < astronaut.std()  # haze removes contrast


def test_kernels_are_normalised_and_shaped():
    assert np.isclose(disk_kernel(4).sum(), 1) and disk_kernel(4).shape == (9, 9)
    k = motion_kernel(10, 3.0, 0.0)
    assert np.isclose(k.sum(), 1)
    centre = k.shape[0] // 2
    assert k[centre, centre:].sum() > 0.99  # one-sided along +x, starting at the pixel itself
    sym = motion_kernel(10, 3.0, 0.0, centered=True)
    assert np.allclose(sym, sym[:, ::-1], atol=1e-6)


def test_protocol_has_sixteen_combinations():
    assert [len(COMBINATIONS[g]) for g in "ABC"] == [8, 4, 4]
    flat = [c for g in "ABC" for c in COMBINATIONS[g]]
    assert len(set(flat)) == 16
    assert all(name in DEGRADATIONS for combo in flat for name in combo)


def test_each_task_names_the_degradation_it_undoes():
    assert degradation_for("dejpeg").name == "jpeg" and degradation_for("sr").name == "lowres"
    with pytest.raises(ToolNotFoundError, match="no degradation is undone by task 'dejpg'.*dejpeg"):
        degradation_for("dejpg")
