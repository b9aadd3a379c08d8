from __future__ import annotations

import numpy as np
import pytest
from conftest import psnr, quantize

from tiragent.errors import ImageError, ToolNotFoundError
from tiragent.eval.degradations import degrade
from tiragent.eval.metrics import FULL_REFERENCE, METRICS, NO_REFERENCE, create_metric, evaluate, normalized


@pytest.fixture(scope="module")
def pair():
    from skimage import data
    from skimage.transform import resize

    clean = quantize(resize(data.astronaut(), (192, 192), anti_aliasing=True).astype(np.float32))
    noisy, _ = degrade(clean, ["noise"], params={"noise": {"kind": "gaussian", "sigma": 25}})
    return clean, noisy


def test_required_metrics_exist():
    assert {"psnr", "ssim", "ms_ssim"} <= set(FULL_REFERENCE) and len(FULL_REFERENCE) >= 5
    assert {"niqe", "piqe"} <= set(NO_REFERENCE)


def test_psnr_matches_the_formula(pair):
    clean, noisy = pair
    assert create_metric("psnr")(noisy, clean) == pytest.approx(psnr(noisy, clean), abs=0.05)


def test_full_reference_metrics_rank_identity_above_noise(pair):
    clean, noisy = pair
    for name in FULL_REFERENCE:
        metric = create_metric(name)
        same, worse = metric(clean, clean), metric(noisy, clean)
        assert normalized(name, same) > normalized(name, worse), name


def test_no_reference_metrics_work_offline_and_prefer_clean(pair):
    clean, noisy = pair
    for name in NO_REFERENCE:
        assert normalized(name, create_metric(name)(clean)) > normalized(name, create_metric(name)(noisy)), name


def test_niqe_uses_the_shipped_parameters():
    import scipy.io

    from tiragent.eval.metrics import niqe_params_path

    params = scipy.io.loadmat(niqe_params_path())
    assert params["mu_prisparam"].shape == (1, 36) and params["cov_prisparam"].shape == (36, 36)


def test_normalized_is_higher_better_and_clipped():
    assert normalized("psnr", 30) > normalized("psnr", 20)
    assert normalized("niqe", 3) > normalized("niqe", 8)
    assert normalized("gmsd", 0.01) > normalized("gmsd", 0.2)
    assert normalized("psnr", 500) == 1.0 and normalized("piqe", 500) == 0.0
    for info in METRICS.values():
        assert info.low < info.high and info.description


def test_errors_name_the_problem(pair):
    clean, _ = pair
    with pytest.raises(ToolNotFoundError, match="unknown metric 'pnsr'.*did you mean 'psnr'"):
        create_metric("pnsr")
    with pytest.raises(ValueError, match="full-reference metric"):
        create_metric("ssim")(clean)
    with pytest.raises(ImageError, match="differ in size"):
        create_metric("psnr")(clean, clean[:100])
    with pytest.raises(ImageError, match="ms_ssim needs at least 161"):
        create_metric("ms_ssim")(clean[:100, :100], clean[:100, :100])


def test_evaluate_picks_metrics_by_reference(pair):
    clean, noisy = pair
    assert set(evaluate(noisy)) == set(NO_REFERENCE)
    assert set(evaluate(noisy, clean)) == set(NO_REFERENCE) | set(FULL_REFERENCE)
    assert "ms_ssim" not in evaluate(noisy[:100, :100], clean[:100, :100])
