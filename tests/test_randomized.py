"""The randomized training degradation model: seeded, every implementation drawn, strengths from mild to strong."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import psnr

from tiragent.errors import ParameterError
from tiragent.eval.degradations import DEGRADATIONS, degrade
from tiragent.eval.randomized import RANDOMIZED, VARIANTS


@pytest.fixture(scope="module")
def photo(astronaut):
    return astronaut


def test_every_degradation_of_the_vocabulary_has_a_randomized_form():
    assert set(RANDOMIZED) == set(DEGRADATIONS) and all(len(v) >= 2 for v in VARIANTS.values())


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_same_seed_gives_the_same_pixels_and_every_variant_is_drawn(photo, name):
    first, record = degrade(photo, [name], seed=7, model="randomized")
    again, same = degrade(photo, [name], seed=7, model="randomized")
    assert np.array_equal(first, again) and record == same
    assert first.dtype == np.float32 and first.min() >= 0 and first.max() <= 1
    drawn = Counter(degrade(photo[:48, :48], [name], seed=s, model="randomized")[1][0]["params"]["variant"] for s in range(60))
    assert set(drawn) == set(VARIANTS[name]), drawn


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_degrades(photo, name):
    for variant in VARIANTS[name]:
        out, record = degrade(photo, [name], seed=3, params={name: {"variant": variant}}, model="randomized")
        assert record[0]["params"]["variant"] == variant
        if name == "lowres":
            scale = record[0]["params"]["scale"]
            assert out.shape == (128 // scale, 128 // scale, 3)
        else:
            assert out.shape == photo.shape and psnr(out, photo) < 40, (name, variant)


def test_strengths_reach_mild_cases_and_differ_from_the_protocol(photo):
    sigmas = [degrade(photo[:32, :32], ["noise"], seed=s, model="randomized")[1][0]["params"]["sigma"] for s in range(200)]
    assert min(sigmas) < 5 and max(sigmas) > 35  # the protocol draws 20-50 only
    qualities = [degrade(photo[:32, :32], ["jpeg"], seed=s, model="randomized")[1][0]["params"]["quality"] for s in range(200)]
    assert min(qualities) < 12 and max(qualities) > 80  # the protocol: 10-29
    scales = {degrade(photo, ["lowres"], seed=s, model="randomized")[1][0]["params"]["scale"] for s in range(20)}
    assert scales == {2, 4}


def test_given_parameters_are_used_and_bad_ones_named(photo):
    _, record = degrade(photo, ["motion"], seed=0, params={"motion": {"variant": "box", "length": 9, "angle": 30.0}}, model="randomized")
    assert record[0]["params"] == {"variant": "box", "length": 9, "angle": 30.0}
    with pytest.raises(ValueError, match="motion has no variant 'zigzag'"):
        degrade(photo, ["motion"], params={"motion": {"variant": "zigzag"}}, model="randomized")
    with pytest.raises(ParameterError, match="unknown degradation model 'bsrgan'"):
        degrade(photo, ["noise"], model="bsrgan")


def test_the_protocol_stays_as_it_was(photo):
    out, record = degrade(photo, ["noise"], seed=5)
    assert "variant" not in record[0]["params"] and 20 <= record[0]["params"].get("sigma", 30) <= 50


def test_camera_native_photos_are_smooth_seeded_and_of_camera_sizes(photo):
    import cv2

    from tiragent.eval.randomized import anisotropy, camera_file, camera_native

    def detail(image):
        return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_32F).std())

    sizes, ratios = set(), []
    for seed in range(6):
        out, params = camera_native(photo, np.random.default_rng(seed))
        again, _ = camera_native(photo, np.random.default_rng(seed))
        assert np.array_equal(out, again) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        assert 1.5 <= params["factor"] <= 4.0 and 0.7 <= params["exposure"] <= 1.0
        assert max(out.shape[:2]) <= 512 and min(out.shape[:2]) >= min(192, min(photo.shape[:2]))
        sizes.add(out.shape[:2])
        ratios.append(detail(out) / detail(photo))
    assert len(sizes) > 1 and max(ratios) < 0.7  # smoother at pixel scale than the photo it came from
    dim, params = camera_native(photo, np.random.default_rng(0), dim=True)
    same, _ = camera_native(photo, np.random.default_rng(0))
    assert 0.15 <= params["exposure"] <= 0.7 and dim.shape == same.shape  # the same draws: only the exposure differs
    assert dim.mean() < 0.75 * same.mean()
    # the most oriented of several windows: the same draws as that many single windows, the most anisotropic kept
    rng = np.random.default_rng(5)
    singles = [camera_native(photo, rng)[0] for _ in range(4)]
    kept, params = camera_native(photo, np.random.default_rng(5), windows=4)
    scores = [anisotropy(cv2.cvtColor(s, cv2.COLOR_RGB2GRAY)) for s in singles]
    assert params["windows"] == 4 and np.array_equal(kept, singles[int(np.argmax(scores))])
    compressed, used = camera_file(photo, np.random.default_rng(0))
    assert 88 <= used["quality"] <= 98 and psnr(compressed, photo) > 33  # high quality: not a degradation to restore


def test_non_homogeneous_haze_varies_across_the_frame_and_a_rain_veil_lifts_the_blacks():
    flat = np.full((96, 96, 3), 0.3, np.float32)
    fixed = {"airlight": 0.9, "beta": 1.5}
    uniform, _ = degrade(flat, ["haze"], seed=2, params={"haze": {"variant": "uniform", **fixed}}, model="randomized")
    patchy, _ = degrade(flat, ["haze"], seed=2, params={"haze": {"variant": "patchy", **fixed}}, model="randomized")
    assert uniform[..., 0].std() < 1e-4 and patchy[..., 0].std() > 0.02  # the same scene, haze thick in some places only
    black = np.zeros((96, 96, 3), np.float32)
    veiled, record = degrade(black, ["rain"], seed=4, params={"rain": {"variant": "veiled"}}, model="randomized")
    thin, _ = degrade(black, ["rain"], seed=4, params={"rain": {"variant": "thin"}}, model="randomized")
    veil = record[0]["params"]["veil"]
    assert 0.6 <= veil <= 0.9 and veiled.min() >= (1 - veil) * 0.7 - 1e-6 and thin.min() == 0.0


def test_anisotropy_reads_how_much_the_edges_share_one_orientation() -> None:
    import cv2

    from tiragent.eval.randomized import anisotropy

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.random((128, 128)).astype(np.float32), (0, 0), 1.0)
    stripes = np.tile((np.sin(np.arange(128) / 3.0) * 0.5 + 0.5).astype(np.float32), (128, 1))
    trail = cv2.filter2D(texture, -1, np.full((1, 15), 1 / 15, np.float32))  # a horizontal motion trail
    assert anisotropy(stripes) > 0.95 and anisotropy(texture) < 0.15
    assert anisotropy(trail) > anisotropy(texture) + 0.3
    assert anisotropy(np.zeros((32, 32), np.float32)) == 0.0  # flat: no orientation, not NaN
