"""The policy that ships in the package: present, within its budget, documented by its card, and acting validly."""

from __future__ import annotations

import json

import pytest

from tiragent.agent.loop import restore
from tiragent.agent.policies.shipped import shipped_policy_dir
from tiragent.agent.policy import create_policy
from tiragent.eval.degradations import degrade

pytestmark = pytest.mark.anyio


def test_the_shipped_policy_is_small_and_carries_its_recipe():
    folder = shipped_policy_dir()
    assert (folder / "model.safetensors").stat().st_size < 50 * 2**20
    card = json.loads((folder / "card.json").read_text())
    assert card["model"]["parameters"] < 20_000_000 and card["sft"]["steps"] > 0 and card["sft_data"]["conversations"] > 0
    assert card["sft_data"]["config"]["degradations"] == "randomized"  # trained on the training model, not the benchmark's protocol
    if card["rl"] is not None:
        assert card["rl"]["steps"] > 0 and card["rl"]["minutes"] > 0
    assert json.loads((folder / "tir_agent_views.json").read_text())["perception"]


async def test_the_shipped_policy_makes_only_valid_calls(session, astronaut):
    policy = create_policy("tir")
    assert policy.name == "tir" and policy.views.perception
    for k, combination in enumerate([("noise",), ("haze", "noise"), ("defocus", "jpeg"), ()]):
        image = degrade(astronaut, list(combination), seed=k)[0] if combination else astronaut
        result, trajectory = await restore(session, image, policy)
        assert "malformed" not in trajectory.stop_reason, trajectory.stop_reason
        assert all(step.error is None for step in trajectory.steps)
        assert len(trajectory.steps) <= policy.default_max_steps and result.ndim == 3
