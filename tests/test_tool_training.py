"""`tir-agent tools train`: reproducible batches, resume, checkpoints and the weights card."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from skimage import data

from tiragent.cli import main
from tiragent.errors import ParameterError, TirAgentError
from tiragent.images import write_image
from tiragent.server.nets import descriptor, load_net, read_info, self_ensemble
from tiragent.tasks import Task
from tiragent.train.tool_recipes import RECIPES, ToolTrainConfig, get_recipe
from tiragent.train.tool_trainer import PairSampler, train_tool

TINY = {"width": 4, "blocks": [1, 1], "unshuffle": 2}


@pytest.fixture
def images(tmp_path):
    photo = data.astronaut()
    folder = tmp_path / "clean"
    for i in range(5):
        write_image(photo[i * 80 : i * 80 + 112, i * 70 : i * 70 + 120].astype(np.float32) / 255, folder / f"{i}.png")
    return folder


@pytest.fixture
def tiny_recipes(monkeypatch):
    """Shrink every recipe's network so a run takes a second."""
    tiny = {"resunet": TINY, "srnet": {"width": 4, "blocks": 1}, "motionkernel": {"width": 4, "view": 64, "sigmas": [2, 4]}, "hazenet": {"width": 4, "size": 32}, "curvenet": {"width": 4, "size": 32}}
    for key, recipe in RECIPES.items():
        monkeypatch.setitem(RECIPES, key, type(recipe)(**{**recipe.__dict__, "config": {**recipe.config, **tiny[recipe.arch]}}))


def config(images, tmp_path, **kw):
    return ToolTrainConfig(**{"task": "denoise", "data": images, "out": tmp_path / "runs", "steps": 6, "batch_size": 2, "patch_size": 32, "val_images": 1, "device": "cpu", **kw})


def test_every_task_has_a_recipe_and_two_sr_regimes():
    assert {r.task for r in RECIPES.values()} == set(Task)
    assert {r.scale for r in RECIPES.values() if r.task == Task.SR} == {2, 4}
    with pytest.raises(ParameterError, match="no recipe 'huge'"):
        get_recipe("denoise", "huge")
    with pytest.raises(ParameterError, match="unknown task"):
        get_recipe("colorize")


@pytest.mark.parametrize("key", sorted(RECIPES))
def test_batches_depend_only_on_seed_and_step(key, astronaut):
    recipe = RECIPES[key]
    crops = [astronaut, np.ascontiguousarray(astronaut[::-1])]
    a, b = PairSampler(crops, recipe, 64, seed=3), PairSampler(crops, recipe, 64, seed=3)
    degraded, clean, params = a.batch(5, 3)
    assert len(params) == 3 and params[0] == b.batch(5, 3)[2][0]
    assert clean.shape == (3, 3, 64, 64) and degraded.shape == (3, 3, 64 // recipe.scale, 64 // recipe.scale)
    assert torch.equal(degraded, b.batch(5, 3)[0]) and torch.equal(clean, b.batch(5, 3)[1])
    assert not torch.equal(degraded, a.batch(6, 3)[0])
    if recipe.scale == 1:
        assert float((degraded - clean).abs().mean()) > 0.005  # the degradation did something


@pytest.mark.parametrize("key", sorted(RECIPES))
def test_the_randomized_model_trains_every_recipe(key, astronaut):
    recipe = RECIPES[key]
    crops = [astronaut, np.ascontiguousarray(astronaut[::-1])]
    sampler = PairSampler(crops, recipe, 64, seed=3, degradations="randomized")
    degraded, clean, params = sampler.batch(2, 4)
    assert all("variant" in p for p in params) and torch.equal(degraded, PairSampler(crops, recipe, 64, seed=3, degradations="randomized").batch(2, 4)[0])
    assert clean.shape == (4, 3, 64, 64) and degraded.shape == (4, 3, 64 // recipe.scale, 64 // recipe.scale)  # fixed parameters (SR's scale) kept


def test_a_protocol_share_mixes_the_protocols_pairs_into_the_randomized_models(astronaut):
    recipe = RECIPES["denoise.unet"]
    crops = [astronaut, np.ascontiguousarray(astronaut[::-1])]
    plain = PairSampler(crops, recipe, 64, seed=3, degradations="randomized")
    assert torch.equal(plain.batch(4, 6)[0], PairSampler(crops, recipe, 64, seed=3, degradations="randomized", protocol_share=0.0).batch(4, 6)[0])
    only = PairSampler(crops, recipe, 64, seed=3, degradations="randomized", protocol_share=1.0).batch(4, 6)[2]
    assert not any("variant" in p for p in only) and all(p["kind"] in ("gaussian", "poisson") for p in only)  # the protocol's noise
    mixed = [p for step in range(4) for p in PairSampler(crops, recipe, 64, seed=3, degradations="randomized", protocol_share=0.5).batch(step, 8)[2]]
    assert 4 < sum("variant" in p for p in mixed) < 28


def test_an_identity_share_pairs_sharp_camera_photos_with_themselves(astronaut):
    recipe = RECIPES["defocus_deblur.unet"]
    crops = [astronaut, np.ascontiguousarray(astronaut[::-1])]
    plain = PairSampler(crops, recipe, 64, seed=3, degradations="randomized")
    assert torch.equal(plain.batch(4, 6)[0], PairSampler(crops, recipe, 64, seed=3, degradations="randomized", identity_share=0.0).batch(4, 6)[0])
    degraded, clean, params = PairSampler(crops, recipe, 64, seed=3, degradations="randomized", identity_share=0.5).batch(2, 16)
    same = [bool(torch.equal(d, c)) for d, c in zip(degraded, clean)]
    assert same == [p.get("identity", False) for p in params] and 2 <= sum(same) <= 14  # identity pairs only, and some of both
    assert degraded.shape == (16, 3, 64, 64)


def test_whole_frames_are_views_of_the_image_degraded_as_photos(astronaut):
    recipe = RECIPES["dehaze.hazenet"]
    degraded, clean, params = PairSampler([astronaut], recipe, 48, seed=0).batch(0, 4)
    assert clean.shape == (4, 3, 48, 48) and all(set(p) == {"airlight", "beta"} for p in params)
    # haze depends on the frame's own layout: the top of every frame is hazier than its bottom
    top, bottom = ((degraded - clean)[..., rows, :].abs().mean() for rows in (slice(0, 8), slice(-8, None)))
    assert top > 2 * bottom


def test_augmentation_changes_the_clean_target(astronaut):
    recipe = RECIPES["dehaze.hazenet"]
    plain = dataclasses.replace(recipe, augment=None)
    _, jittered, _ = PairSampler([astronaut], recipe, 48, seed=0).batch(0, 4)
    _, untouched, _ = PairSampler([astronaut], plain, 48, seed=0).batch(0, 4)
    assert recipe.augment is not None and float((jittered - untouched).abs().mean()) > 0.01


@pytest.mark.parametrize("key", ["motion_deblur.kernel_wiener", "dehaze.hazenet", "lowlight.curve"])
def test_networks_with_their_own_objective_train_and_load(key, images, tmp_path, tiny_recipes):
    task, name = key.split(".")
    card = train_tool(config(images, tmp_path, task=task, recipe=name, patch_size=48, steps=3), progress=False)
    info = read_info(tmp_path / "runs" / key / f"{key}.safetensors")
    assert card["tool"] == key and info.arch == RECIPES[key].arch and descriptor(info.config).tile_size is None
    assert np.isfinite(card["validation"]["psnr_out"])


def test_train_writes_weights_with_card(images, tmp_path, tiny_recipes):
    card = train_tool(config(images, tmp_path, eval_data=images), progress=False)
    weights = tmp_path / "runs" / "denoise.unet" / "denoise.unet.safetensors"
    info = read_info(weights)
    assert info.card == card and card["steps"] == 6 and card["tool"] == "denoise.unet"
    assert card["train_images"] == 4 and card["evaluation"]["images"] == 5
    assert card["evaluation"]["psnr_in"] < 30  # the evaluation degraded the images
    assert json.loads((weights.parent / "card.json").read_text()) == card


def test_resume_continues_exactly(images, tmp_path, tiny_recipes):
    train_tool(config(images, tmp_path / "a"), progress=False)
    assert train_tool(config(images, tmp_path / "b"), progress=False, stop_at=3) is None
    assert torch.load(tmp_path / "b" / "runs" / "denoise.unet" / "last.pt", weights_only=False)["step"] == 3
    train_tool(config(images, tmp_path / "b", resume=True), progress=False)
    whole = load_file(tmp_path / "a" / "runs" / "denoise.unet" / "denoise.unet.safetensors")
    resumed = load_file(tmp_path / "b" / "runs" / "denoise.unet" / "denoise.unet.safetensors")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_minutes_fix_the_step_count(images, tmp_path, tiny_recipes):
    card = train_tool(config(images, tmp_path, task="sr", recipe="srnet_x2", steps=None, minutes=0.02), progress=False)
    assert card["steps"] >= 41 and card["config"]["steps"] == card["steps"]


def test_bad_options_are_named(images, tmp_path, tiny_recipes):
    with pytest.raises(ParameterError, match="no checkpoint"):
        train_tool(config(images, tmp_path, resume=True), progress=False)
    with pytest.raises(ParameterError, match="holds no images"):
        train_tool(config(tmp_path, tmp_path), progress=False)
    with pytest.raises(ParameterError, match="at least 288 px"):
        train_tool(config(images, tmp_path, patch_size=256), progress=False)
    with pytest.raises(ParameterError, match="give --degradations randomized"):
        train_tool(config(images, tmp_path, protocol_share=0.5), progress=False)
    with pytest.raises(ParameterError, match="0 to 1"):
        train_tool(config(images, tmp_path, degradations="randomized", protocol_share=1.5), progress=False)
    with pytest.raises(ParameterError, match="identity_share needs a network trained on the image alone"):
        train_tool(config(images, tmp_path, task="motion_deblur", recipe="kernel_wiener", identity_share=0.2), progress=False)
    with pytest.raises(ParameterError, match="0 to below 1"):
        train_tool(config(images, tmp_path, identity_share=1.0), progress=False)


def test_cli_trains(images, tmp_path, tiny_recipes, capsys):
    weights = tmp_path / "w.safetensors"
    code = main(["tools", "train", "--task", "dehaze", "--data", str(images), "--steps", "3", "--batch-size", "2",
                 "--patch-size", "32", "--val-images", "1", "--out", str(tmp_path / "r"), "--weights", str(weights)])
    assert code == 0 and read_info(weights).card["tool"] == "dehaze.unet"
    assert json.loads(capsys.readouterr().out)["steps"] == 3
    assert main(["tools", "train", "--task", "dehaze", "--data", str(tmp_path / "nothing"), "--steps", "1"]) == 2


def test_resume_with_more_steps_extends_the_run(images, tmp_path, tiny_recipes):
    train_tool(config(images, tmp_path), progress=False)
    card = train_tool(config(images, tmp_path, resume=True, steps=9), progress=False)
    assert card["steps"] == 9 and card["schedule"] == [6, 9]


def test_learning_rate_schedule():
    from tiragent.train.tool_trainer import _lr_at

    assert _lr_at(0, [1000], 1e-3) < _lr_at(49, [1000], 1e-3) == pytest.approx(1e-3)
    assert _lr_at(999, [1000], 1e-3) == pytest.approx(1e-5, rel=0.05)
    assert _lr_at(1000, [1000, 2000], 1e-3) == pytest.approx(5e-4)
    assert _lr_at(1999, [1000, 2000], 1e-3) < 2e-5


def test_worker_processes_make_the_same_batches(astronaut):
    from tiragent.train.tool_trainer import batch_stream

    sampler = PairSampler([astronaut], RECIPES["dejpeg.unet"], 48, seed=1)
    made_ahead = batch_stream(sampler, 4, 2, workers=1)
    for step in (4, 5, 6):
        degraded, clean, params = next(made_ahead)
        expected = sampler.batch(step, 2)
        assert torch.equal(degraded, expected[0]) and torch.equal(clean, expected[1]) and params == expected[2]


def test_workers_do_not_change_the_run(images, tmp_path, tiny_recipes):
    inline = train_tool(config(images, tmp_path / "a", steps=3), progress=False)
    ahead = train_tool(config(images, tmp_path / "b", steps=3, workers=2), progress=False)
    assert inline["validation"] == ahead["validation"]


def test_arch_picks_the_tasks_recipe():
    assert get_recipe("motion_deblur", arch="motionkernel").name == "kernel_wiener"
    assert get_recipe("motion_deblur", arch="resunet").name == "unet"
    with pytest.raises(ParameterError, match="no recipe with architecture 'hazenet'.*kernel_wiener \\(motionkernel\\)"):
        get_recipe("motion_deblur", arch="hazenet")


def test_net_config_changes_the_architecture(images, tmp_path, tiny_recipes):
    card = train_tool(config(images, tmp_path, net_config='{"width": 8}', steps=2), progress=False)
    info = read_info(tmp_path / "runs" / "denoise.unet" / "denoise.unet.safetensors")
    assert info.config.width == 8 and card["config"]["net_config"] == '{"width": 8}'
    with pytest.raises(ParameterError, match="--resume: .*width"):
        train_tool(config(images, tmp_path, resume=True, steps=4), progress=False)  # the recipe's own width is 4
    with pytest.raises(ParameterError, match="JSON object"):
        train_tool(config(images, tmp_path, net_config="width=8"), progress=False)
    with pytest.raises(TirAgentError, match="no option depth"):
        train_tool(config(images, tmp_path, net_config='{"depth": 3}'), progress=False)


def test_init_fine_tunes_from_weights(images, tmp_path, tiny_recipes):
    first = tmp_path / "first.safetensors"
    train_tool(config(images, tmp_path / "a", weights=first), progress=False)
    start = load_file(first)
    tuned = train_tool(config(images, tmp_path / "b", init=first, steps=1, lr=1e-9), progress=False)
    after = load_file(tmp_path / "b" / "runs" / "denoise.unet" / "denoise.unet.safetensors")
    assert tuned["config"]["init"] == str(first)
    assert all(torch.allclose(start[k].float(), after[k].float(), atol=1e-3) for k in start)  # a tiny step from the given weights
    with pytest.raises(ParameterError, match="--init: .* not the resunet"):
        train_tool(config(images, tmp_path / "c", init=first, net_config='{"width": 8}'), progress=False)


def test_resume_reads_checkpoints_from_before_the_schedule(images, tmp_path, tiny_recipes):
    train_tool(config(images, tmp_path), progress=False)
    path = tmp_path / "runs" / "denoise.unet" / "last.pt"
    state = torch.load(path, weights_only=False)
    del state["schedule"], state["config"]
    torch.save(state, path)
    assert train_tool(config(images, tmp_path, resume=True, steps=8), progress=False)["schedule"] == [6, 8]



def test_colour_mixing_gives_sharp_colour_edges(astronaut):
    from tiragent.train.tool_recipes import _mix_colours

    grey = np.repeat(astronaut.mean(axis=2, keepdims=True), 3, axis=2)  # no colour at all
    mixed = [_mix_colours(grey, np.random.default_rng(seed)) for seed in range(8)]
    assert all(m.shape == grey.shape and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1 for m in mixed)
    assert max(float(np.abs(m - m.mean(axis=2, keepdims=True)).mean()) for m in mixed) > 0.05  # channels now differ


def test_the_card_says_how_the_weights_were_trained(images, tmp_path, tiny_recipes):
    links = tmp_path / "links"
    links.mkdir()
    for f in sorted(images.iterdir()):
        (links / f"clean_{f.name}").symlink_to(f)
    first = train_tool(config(links, tmp_path / "a"), progress=False)
    assert first["data"] == "clean (5 photos)" and first["description"] == RECIPES["denoise.unet"].description
    init = tmp_path / "a" / "runs" / "denoise.unet" / "denoise.unet.safetensors"
    card = train_tool(config(images, tmp_path / "b", degradations="randomized", protocol_share=0.5, init=init), progress=False)
    assert card["data"] == "clean" and "randomized degradation model" in card["description"]
    assert "50% of its pairs from the benchmark protocol" in card["description"] and "Fine-tuned from denoise.unet.safetensors" in card["description"]


def test_ship_copies_weights_under_the_servers_name_and_names_bad_files(images, tmp_path, tiny_recipes, capsys):
    train_tool(config(images, tmp_path, eval_data=images), progress=False)
    weights = tmp_path / "runs" / "denoise.unet" / "denoise.unet.safetensors"
    into = tmp_path / "shipped"
    assert main(["tools", "ship", str(weights), "--into", str(into)]) == 0
    assert "denoise.unet" in capsys.readouterr().out
    shipped = into / "denoise_unet.safetensors"
    assert shipped.read_bytes() == weights.read_bytes()
    assert main(["tools", "ship", str(weights), "--into", str(into)]) == 0  # again: says what it replaced
    assert "replaced:" in capsys.readouterr().out
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    assert main(["tools", "ship", str(bad), "--into", str(into)]) == 2
    assert "bad.safetensors" in capsys.readouterr().err
    assert shipped.read_bytes() == weights.read_bytes()  # nothing lost
    assert main(["tools", "ship", str(weights), "--into", str(into), "--self_ensemble"]) == 0
    net = load_net(shipped)
    assert net.config.self_ensemble and not load_net(weights).config.self_ensemble
    assert read_info(shipped).card == read_info(weights).card
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():  # the shipped copy is the mean of the plain network over the eight flips and rotations
        assert torch.allclose(net(x), self_ensemble(load_net(weights), x), atol=1e-3)


def test_a_minutes_run_stopped_before_it_measured_its_speed_resumes_to_its_full_length(images, tmp_path, tiny_recipes):
    """Killed while --minutes was still timing its first steps, a run used to end at its checkpoint on --resume."""
    cfg = config(images, tmp_path, task="sr", recipe="srnet_x2", steps=None, minutes=0.02)
    assert train_tool(cfg, progress=False, stop_at=5) is None
    assert torch.load(tmp_path / "runs" / "sr.srnet_x2" / "last.pt", weights_only=False)["schedule"] == []
    card = train_tool(dataclasses.replace(cfg, resume=True), progress=False)
    assert card["steps"] >= 46 and card["schedule"] == [card["steps"]]
