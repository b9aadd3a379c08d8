"""The all-in-one baseline: one network trained on the mixture of degradations, resumable, applied at the target's size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tiragent.cli import main
from tiragent.images import write_image
from tiragent.server.nets import load_net, read_info
from tiragent.train.allinone import apply


@pytest.fixture
def photos(tmp_path, astronaut, coffee):
    folder = tmp_path / "photos"
    write_image(astronaut[:96, :96], folder / "a.png")
    write_image(coffee[:96, :96], folder / "b.png")
    return folder


def test_trains_resumes_and_restores_at_the_targets_size(photos, tmp_path):
    out = tmp_path / "run"
    args = ["train", "allinone", "--data", str(photos), "--out", str(out), "--patch", "48", "--batch_size", "2", "--seed", "3"]
    assert main([*args, "--steps", "2"]) == 0
    assert json.loads((out / "card.json").read_text())["steps"] == 2
    assert main([*args, "--steps", "4", "--resume"]) == 0  # continues from last.pt to the longer run
    card = read_info(out / "allinone.safetensors").card
    assert card["steps"] == 4 and card["parameters"] > 1_000_000
    net = load_net(out / "allinone.safetensors").eval()
    small = np.random.default_rng(0).random((24, 24, 3), dtype=np.float32)
    restored = apply(net, small, np.zeros((96, 96, 3), np.float32))  # a low-resolution input comes back at the clean size
    assert restored.shape == (96, 96, 3) and np.isfinite(restored).all() and 0 <= restored.min() <= restored.max() <= 1


def test_photos_smaller_than_the_patch_are_named(photos, tmp_path, capsys):
    assert main(["train", "allinone", "--data", str(photos), "--out", str(tmp_path / "o"), "--patch", "128", "--steps", "1"]) == 2
    assert "smaller than --patch 128" in capsys.readouterr().err
