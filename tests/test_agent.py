"""The agent loop and the built-in policies over an in-memory MCP session."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import psnr

from tiragent.agent.actions import Action, Stop
from tiragent.agent.loop import restore
from tiragent.agent.policy import POLICIES, create_policy
from tiragent.errors import TirAgentError, ToolNotFoundError
from tiragent.eval.degradations import degrade

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def case():
    from skimage import data
    from skimage.transform import resize

    clean = resize(data.astronaut(), (160, 160), anti_aliasing=True).astype(np.float32)
    degraded, _ = degrade(clean, ["haze", "noise"], seed=1, params={"noise": {"kind": "gaussian", "sigma": 30}})
    return clean, degraded


async def test_action_space_is_read_from_the_server(session):
    space = await session.action_space()
    assert set(space.tasks) == {"denoise", "motion_deblur", "defocus_deblur", "derain", "dehaze", "dejpeg", "sr", "lowlight"}
    assert "bm3d" in space.models["denoise"] and space.defaults["dehaze"] == "hazenet" and space.defaults["lowlight"] == "curve"
    bm3d, unet = space.facts["denoise"]["bm3d"], space.facts["denoise"]["unet"]
    assert (bm3d.cost, bm3d.learned, bm3d.device, bm3d.params) == ("high", False, "cpu", ("sigma",))
    assert unet.learned and unet.default and unet.device == "accelerator" and not bm3d.default
    assert space.facts["sr"]["srnet_x4"].scale == 4 and space.facts["sr"]["lanczos"].scale is None  # None: its `scale` argument
    assert space.facts["dehaze"]["dcp"].scale == 1
    with pytest.raises(TirAgentError, match="task 'dehaze' has no model 'magic'"):
        space.check(Action("dehaze", "magic"))


async def test_fixed_policy_follows_detection_and_improves(session, case):
    clean, degraded = case
    result, trajectory = await restore(session, degraded, create_policy("fixed"))
    assert {s.task for s in trajectory.steps} >= {"denoise"}
    assert [s.index for s in trajectory.path()] == [s.index for s in trajectory.steps]
    assert psnr(result, clean) > psnr(degraded, clean) + 1
    record = trajectory.to_json()
    assert record["tool_calls"] == len(record["steps"]) and all("niqe" in s["metrics"] for s in record["steps"])


async def test_exhaustive_tries_every_model_of_each_task(session, case):
    clean, degraded = case
    space = await session.action_space()
    result, trajectory = await restore(session, degraded, create_policy("exhaustive"))
    tasks = sorted({s.task for s in trajectory.steps})
    assert len(trajectory.steps) == sum(len(space.models[t]) for t in tasks)
    for task in tasks:
        assert sorted(s.model for s in trajectory.steps if s.task == task) == sorted(space.models[task])
    assert len(trajectory.path()) <= len(tasks)  # one kept result per task at most (rollback skips)


async def test_oracle_is_the_upper_bound(session, case):
    clean, degraded = case
    fixed, _ = await restore(session, degraded, create_policy("fixed"))
    best, trajectory = await restore(session, degraded, create_policy("oracle"), reference=clean, known_tasks=["dehaze", "denoise"])
    assert psnr(best, clean) >= psnr(fixed, clean) - 0.05
    assert psnr(best, clean) >= psnr(degraded, clean)
    assert len(trajectory.steps) > 4 and "best psnr" in trajectory.stop_reason
    with pytest.raises(TirAgentError, match="needs the clean reference"):
        await restore(session, degraded, create_policy("oracle"))


async def test_random_policy_and_step_budget(session, case):
    _, degraded = case
    _, trajectory = await restore(session, degraded, create_policy("random", seed=3))
    assert 1 <= len(trajectory.steps) <= 3
    _, capped = await restore(session, degraded, create_policy("exhaustive"), max_steps=2)
    assert len(capped.steps) == 2 and "budget" in capped.stop_reason


class Scripted:
    """A policy that plays back fixed decisions."""

    name = "scripted"
    default_max_steps = 10

    def __init__(self, decisions):
        self.decisions = list(decisions)

    async def reset(self, observation):
        pass

    async def next(self, observation):
        return self.decisions.pop(0) if self.decisions else Stop(reason="script done")


async def test_a_failing_tool_call_is_recorded_and_the_loop_goes_on(session, case):
    _, degraded = case
    policy = Scripted([Action("denoise", "wavelet", {"sigma": 500}), Action("dehaze", "cap", {"omega": 1}), Action("dehaze", "dcp")])
    result, trajectory = await restore(session, degraded, policy)
    assert [s.error is not None for s in trajectory.steps] == [True, True, False]
    assert "less than or equal to 100" in trajectory.steps[0].error and "omega" in trajectory.steps[1].error
    assert trajectory.final_id == trajectory.steps[2].output_id and result.shape == degraded.shape


async def test_stop_with_a_chosen_image_and_unknown_actions(session, case):
    _, degraded = case
    policy = Scripted([Action("dehaze", "dcp"), Stop(final=None)])
    _, trajectory = await restore(session, degraded, policy)
    assert trajectory.final_id == trajectory.steps[0].output_id
    with pytest.raises(TirAgentError, match="unknown task 'paint'"):
        await restore(session, degraded, Scripted([Action("paint", "x")]))


def test_policy_registry():
    assert create_policy("fixed").name == "fixed"  # registers the built-in policies
    assert {"fixed", "random", "exhaustive", "oracle", "qwen"} <= set(POLICIES)
    with pytest.raises(ToolNotFoundError, match="unknown policy 'exhaustiv'.*did you mean 'exhaustive'"):
        create_policy("exhaustiv")


async def test_several_episodes_share_one_session(session, case, astronaut):
    """A session serves episode after episode (as evaluation and RL do): no state leaks between them."""
    clean, degraded = case
    first, one = await restore(session, degraded, create_policy("fixed"), name="first")
    second, two = await restore(session, astronaut, Scripted([Action("lowlight", "gamma", {"gamma": 0.8})]), name="second")
    third, three = await restore(session, degraded, create_policy("fixed"), name="third")
    assert one.original_id == three.original_id != two.original_id  # content-addressed: the same input, the same id
    assert [s.key for s in two.steps] == ["lowlight.gamma"] and two.steps[0].input_id == two.original_id
    assert [s.key for s in one.steps] == [s.key for s in three.steps] and np.array_equal(first, third)
    assert second.shape == astronaut.shape and not np.array_equal(second, astronaut)
