"""The shipped learned tools: one or more per task, small, registered, and each undoes its degradation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import psnr
from skimage import data
from skimage.transform import resize

from tiragent.eval.degradations import DEGRADATIONS
from tiragent.server.nets import WeightsError, count_parameters, descriptor, load_net, read_info
from tiragent.server.pool import ModelPool
from tiragent.server.registry import Cost, list_tools
from tiragent.server.tools.learned import SHIPPED, WEIGHTS_DIR, register_weights
from tiragent.tasks import Task
from tiragent.train.tool_recipes import RECIPES

pytestmark = pytest.mark.anyio


def test_every_task_has_a_shipped_learned_tool_within_budget():
    paths = [WEIGHTS_DIR / f"{stem}.safetensors" for stem in SHIPPED]
    assert all(p.is_file() for p in paths), [p.name for p in paths if not p.is_file()]
    assert sum(p.stat().st_size for p in paths) < 40 * 2**20
    for path in paths:
        assert count_parameters(load_net(path)) < 5_000_000
        assert read_info(path).card["tool"] in RECIPES
    learned = [s for s in list_tools() if s.is_torch and s.key.replace(".", "_") in SHIPPED]
    assert {s.task for s in learned} == set(Task)
    for spec in learned:  # the pool runs each as its weights file describes
        assert spec.descriptor == descriptor(read_info(WEIGHTS_DIR / f"{spec.key.replace('.', '_')}.safetensors").config)
        assert "Trained by tir-agent" in spec.description


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return resize(data.astronaut(), (192, 192), anti_aliasing=True).astype(np.float32)


@pytest.mark.parametrize("key", sorted(RECIPES))
async def test_each_learned_tool_undoes_its_degradation(key, photo):
    recipe = RECIPES[key]
    degraded, _ = DEGRADATIONS[recipe.degradation].fn(photo, np.random.default_rng(1), **recipe.fixed)
    async with ModelPool() as pool:
        result = await pool.call(key, degraded)
    assert result.image.shape == photo.shape
    if recipe.scale > 1:
        base = resize(degraded, photo.shape[:2], order=3).astype(np.float32)
    else:
        base = degraded
    assert psnr(result.image, photo) > psnr(np.clip(base, 0, 1), photo) + 0.3


def test_a_damaged_weights_file_is_named(tmp_path):
    stem = next(iter(SHIPPED))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((WEIGHTS_DIR / f"{stem}.safetensors").read_bytes()[:100])
    with pytest.raises(WeightsError, match="cut.safetensors"):
        register_weights(cut, Cost.LOW)
