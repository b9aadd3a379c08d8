"""The multi-dimensional adaptive reward: trends move the weights, against reward hacking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tiragent.train.reward import AdaptiveReward, Outcome, RewardConfig

BEFORE = {"psnr": 20.0, "ssim": 0.6, "ms_ssim": 0.7, "niqe": 8.0}


def outcome(psnr=0.0, ssim=0.0, ms_ssim=0.0, niqe=0.0, **kw) -> Outcome:
    """An episode whose result improves each metric by the given amount (NIQE: lower is better, so it drops)."""
    after = {"psnr": 20.0 + psnr, "ssim": 0.6 + ssim, "ms_ssim": 0.7 + ms_ssim, "niqe": 8.0 - niqe}
    return Outcome(before=BEFORE, after=after, **kw)


def batch(rng, n=16, **means) -> list[Outcome]:
    return [outcome(**{k: v + rng.normal(0, 0.05 * (abs(v) + 0.1)) for k, v in means.items()}) for _ in range(n)]


def test_a_dimension_rising_alone_loses_weight_and_the_others_gain():
    reward, rng = AdaptiveReward(RewardConfig(horizon=5)), np.random.default_rng(0)
    assert reward.weights == pytest.approx([0.25] * 4)
    for step in range(30):
        reward.update(batch(rng, psnr=1.0, ssim=0.02, ms_ssim=0.02, niqe=0.2 + 0.1 * step))  # NIQE keeps improving, the rest stall
    w = dict(zip(reward.config.dimensions, reward.weights))
    assert w["niqe"] < 0.2 and all(w[k] > 0.25 for k in ("psnr", "ssim", "ms_ssim"))
    assert reward.log()["trends"]["niqe"] > 0.3 > max(abs(reward.log()["trends"][k]) for k in ("psnr", "ssim", "ms_ssim"))


def test_weights_stay_normalised_and_positive():
    reward, rng = AdaptiveReward(RewardConfig(horizon=3, prior_weights=(2, 1, 1, 1))), np.random.default_rng(1)
    assert reward.weights == pytest.approx([0.4, 0.2, 0.2, 0.2])
    for _ in range(20):
        reward.update(batch(rng, psnr=rng.normal(0, 3), ssim=rng.normal(0, 0.1), ms_ssim=rng.normal(0, 0.1), niqe=rng.normal(0, 2)))
        assert sum(reward.weights) == pytest.approx(1.0) and min(reward.weights) > 0


def test_a_constant_metric_never_divides_by_zero():
    reward = AdaptiveReward()
    same = [outcome(psnr=1.0, ssim=0.1, ms_ssim=0.1, niqe=1.0, tool_calls=2) for _ in range(4)]
    for _ in range(12):
        reward.update(same)
    assert all(math.isfinite(w) for w in reward.weights) and reward.weights == pytest.approx([0.25] * 4)
    assert reward.score_group(same) == pytest.approx([-2 * reward.config.call_cost] * 4)  # no one is better than another
    assert all(math.isfinite(t) for t in reward.trends())


def test_format_penalty_and_call_cost():
    reward = AdaptiveReward(RewardConfig(format_penalty=1.0, call_cost=0.1))
    good, slow, broken = outcome(psnr=2, tool_calls=1), outcome(psnr=2, tool_calls=4), outcome(psnr=2, tool_calls=1, invalid=True)
    r = reward.score_group([good, slow, broken])
    assert r[0] - r[1] == pytest.approx(0.3) and r[0] - r[2] == pytest.approx(1.0)


def test_a_policy_that_games_the_no_reference_metric_ranks_lower_than_under_fixed_weights():
    """Training drifts towards a policy that inflates NIQE's score while PSNR falls; then one image is scored for
    an honest rollout and a hacking one. Fixed weights see a tie (the hacker wins on two metrics, loses on two);
    the adaptive reward has learned that NIQE rises alone and PSNR falls, and ranks the hacker below."""
    rng = np.random.default_rng(2)
    adaptive, fixed = AdaptiveReward(RewardConfig(horizon=8)), AdaptiveReward(RewardConfig(adaptive=False))
    for step in range(40):
        drift = step / 40
        population = batch(rng, psnr=1.5 - 2.0 * drift, ssim=0.05, ms_ssim=0.05 + 0.02 * drift, niqe=0.5 + 3.0 * drift)
        adaptive.update(population)
        fixed.update(population)
    honest = outcome(psnr=1.5, ssim=0.06, ms_ssim=0.05, niqe=0.5)
    hacker = outcome(psnr=-0.5, ssim=0.04, ms_ssim=0.07, niqe=3.5)
    fixed_margin = np.subtract(*fixed.score_group([honest, hacker]))
    adaptive_margin = np.subtract(*adaptive.score_group([honest, hacker]))
    assert fixed_margin == pytest.approx(0.0, abs=1e-4)
    assert adaptive_margin > fixed_margin + 0.3


def test_the_state_survives_a_resume():
    rng = np.random.default_rng(3)
    reward = AdaptiveReward(RewardConfig(horizon=4))
    for step in range(9):
        reward.update(batch(rng, psnr=step * 0.2, ssim=0.01, ms_ssim=0.01, niqe=0.1))
    again = AdaptiveReward(RewardConfig(horizon=4))
    again.load_state_dict(reward.state_dict())
    assert again.weights == pytest.approx(reward.weights) and again.steps == 9


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="3 prior weights for 4 dimensions"):
        RewardConfig(prior_weights=(1, 1, 1))
    with pytest.raises(ValueError, match="at least one dimension"):
        RewardConfig(dimensions=())
