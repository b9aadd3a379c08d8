"""Pretraining a tiny Qwen-VL's vision tower on degradation recognition: it trains the tower and nothing else, writes a
checkpoint that SFT and the policy load, resumes, and refuses a resumed run of another recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tiragent.errors import ParameterError
from tiragent.train.vision_pretrain import VisionPretrainConfig, pretrain_vision


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for i, image in enumerate([data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]):
        Image.fromarray(image).resize((160, 120)).save(folder / f"p{i}.png")
    return folder


def config(checkpoint, photos, out, **kw) -> VisionPretrainConfig:
    base = dict(model=checkpoint, out=out, data=[photos], whole_view=64, crop_view=32, samples=8, val_samples=4, steps=4, batch=4, workers=1, val_fraction=0.25)
    return VisionPretrainConfig(**{**base, **kw})


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_pretraining_trains_the_tower_only_and_saves_a_checkpoint(checkpoint, photos, tmp_path):
    out = tmp_path / "vision"
    card = pretrain_vision(config(checkpoint, photos, out, lr=1e-2))
    before, after = weights(checkpoint), weights(out)
    assert before.keys() == after.keys()
    changed = {k for k in before if not np.array_equal(before[k].numpy(), after[k].numpy())}
    assert changed and all("visual" in k for k in changed)
    assert any("visual.blocks" in k for k in changed)  # the tower itself, not only its merger
    saved = json.loads((out / "tir_agent_vision.json").read_text())
    assert saved["validation"] == card["validation"] and 0 <= card["validation"]["exact_set"] <= 1
    assert saved["recipe"]["steps"] == 4 and saved["train_photos"] == 3 and saved["validation_photos"] == 1

    from tiragent.agent.policies.qwen import QwenVLPolicy

    QwenVLPolicy(str(out))  # loads as a policy (and so as SFT's --model)


def test_pretraining_resumes_and_refuses_another_recipe(checkpoint, photos, tmp_path):
    out = tmp_path / "vision"
    first = pretrain_vision(config(checkpoint, photos, out, steps=2))
    tower = weights(out)
    card = pretrain_vision(config(checkpoint, photos, out, steps=2, resume=True))
    assert first["resumed_at_step"] == 0 and card["resumed_at_step"] == 2
    assert card["validation"] == first["validation"]
    assert all(np.array_equal(tower[k].numpy(), v.numpy()) for k, v in weights(out).items())
    with pytest.raises(ParameterError, match="lr"):
        pretrain_vision(config(checkpoint, photos, out, steps=2, lr=1e-3, resume=True))


def test_bad_settings_are_named(checkpoint, photos, tmp_path):
    with pytest.raises(ParameterError, match="val_fraction"):
        config(checkpoint, photos, tmp_path / "x", val_fraction=1.5)
    with pytest.raises(ParameterError, match="not a checkpoint"):
        pretrain_vision(config(photos, photos, tmp_path / "x"))
