"""`tir-agent train gen-sft`: searched and perturbed trajectories over MCP, resumable, with a dataset card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tiragent.cli import main
from tiragent.images import read_image, write_image
from tiragent.train.samples import plan


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory):
    from skimage import data
    from skimage.transform import resize

    folder = tmp_path_factory.mktemp("clean")
    for name, image in (("a", data.astronaut()), ("b", data.coffee()), ("c", data.chelsea())):
        write_image(resize(image, (120, 150), anti_aliasing=True).astype(np.float32), folder / f"{name}.png")
    return folder


ARGS = ["--crop", "64", "--workers", "3", "--whole_view", "48", "--crop_view", "32", "--single_ratio", "0.5",
        "--clean_ratio", "0.25", "--shuffle_ratio", "1", "--substitute_ratio", "1", "--device", "cpu", "--seed", "3"]  # fmt: skip


def records(out):
    return [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dataset(clean_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    assert main(["train", "gen-sft", "--clean", str(clean_dir), "--out", str(out), "--images", "4", *ARGS]) == 0
    return out


def test_the_plan_is_a_function_of_the_seed(clean_dir):
    sources = sorted(clean_dir.iterdir())
    make = lambda seed: plan(40, sources, seed=seed, single_ratio=0.25, clean_ratio=0.1)  # noqa: E731
    assert make(5) == make(5)
    kinds = [len(s.combination) for s in make(5)]
    assert 0 in kinds and 1 in kinds and max(kinds) >= 2  # clean, single and combined degradations
    assert make(5) != make(6)


def test_camera_native_samples_are_clean_or_camera_noisy_and_leave_other_plans_alone(clean_dir):
    from conftest import psnr

    from tiragent.errors import TirAgentError
    from tiragent.train.configs import GenSFTConfig
    from tiragent.train.samples import make_pair

    sources = sorted(clean_dir.iterdir())
    without = plan(40, sources, seed=5, single_ratio=0.25, clean_ratio=0.1)
    assert plan(40, sources, seed=5, single_ratio=0.25, clean_ratio=0.1, camera_ratio=0.0) == without
    mixed = plan(40, sources, seed=5, single_ratio=0.25, clean_ratio=0.1, camera_ratio=0.5)
    camera = [s for s in mixed if s.camera]
    assert 8 <= len(camera) <= 32 and {s.combination for s in camera} == {(), ("noise",)}
    assert all(a == b for a, b in zip(mixed, without) if not a.camera)  # the other indices keep their samples
    assert all(s.tasks == (["denoise"] if s.combination else []) for s in camera)
    for sample in camera[:4]:
        degraded, clean = make_pair(sample, clean_dir, 64)
        again, _ = make_pair(sample, clean_dir, 64)
        assert degraded.shape == clean.shape == (64, 64, 3) and np.array_equal(degraded, again)
        assert psnr(degraded, clean) > (20 if sample.combination else 30)  # mild: a camera photo, not a wreck
    with pytest.raises(TirAgentError, match="camera_ratio"):
        GenSFTConfig(clean=clean_dir, out=clean_dir, camera_ratio=1.5)


def test_conversations_end_on_stop_and_their_images_are_files(dataset):
    rows = records(dataset)
    assert {r["kind"] for r in rows} >= {"searched"} and len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        messages = r["messages"]
        assert messages[0]["role"] == "system" and messages[-1] == {"role": "assistant", "content": [{"type": "text", "text": "STOP"}]}
        calls = [m["tool_calls"][0]["function"] for m in messages if m.get("tool_calls")]
        assert [f"{c['name']}.{c['arguments']['model']}" for c in calls] == r["trajectory"]
        placeholders = sum(p.get("type") == "image" for m in messages if isinstance(m["content"], list) for p in m["content"])
        assert placeholders == len(r["images"]) >= 1
        assert all(read_image(dataset / path).shape[2] == 3 for path in r["images"])
    for r in rows:
        if r["kind"] == "searched" and not r["combination"]:
            assert r["trajectory"] == [] and len(r["messages"]) == 3  # a clean photo: STOP at once
        if r["kind"] == "searched" and r["combination"]:
            assert r["gain"]["score"] >= -1e-6  # the search never keeps a worse image than its input


def test_perturbed_twins_are_other_real_trajectories(dataset):
    rows = records(dataset)
    by_image = {}
    for r in rows:
        by_image.setdefault(r["id"].split("_")[0], {})[r["kind"]] = r
    twins = [(g["searched"], g[k]) for g in by_image.values() for k in ("shuffled", "substituted") if k in g]
    assert twins, "every non-empty path gets a substituted twin at ratio 1"
    for searched, twin in twins:
        assert twin["trajectory"] != searched["trajectory"]
        if twin["kind"] == "shuffled":
            assert sorted(twin["trajectory"]) == sorted(searched["trajectory"])
        else:
            assert [s.split(".")[0] for s in twin["trajectory"]] == [s.split(".")[0] for s in searched["trajectory"]]
        assert twin["images"] and twin["images"][0] != searched["images"][0]  # its own images, re-executed


def test_a_rerun_continues_and_the_card_counts_the_data(dataset, clean_dir):
    before = (dataset / "data.jsonl").read_text()
    assert main(["train", "gen-sft", "--clean", str(clean_dir), "--out", str(dataset), "--images", "5", *ARGS]) == 0
    after = (dataset / "data.jsonl").read_text()
    assert after.startswith(before)  # nothing redone
    rows = records(dataset)
    assert sorted({r["id"].split("_")[0] for r in rows}) == [f"{i:06d}" for i in range(5)]
    card = json.loads((dataset / "card.json").read_text())
    assert card["conversations"] == len(rows) and card["images"] == 5
    assert sum(card["per_combination"].values()) == 5 and card["distinct_trajectories"] <= len(rows)
    assert 0 <= card["order_diversity"] <= 1 and 0 <= card["tool_diversity"] <= 1
    assert "# SFT data card" in (dataset / "card.md").read_text()
    tools = json.loads((dataset / "tools.json").read_text())
    assert {t["function"]["name"] for t in tools} == {"denoise", "motion_deblur", "defocus_deblur", "derain", "dehaze", "dejpeg", "sr", "lowlight"}


def test_a_conversation_renders_with_the_policys_template(dataset, checkpoint):
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    row = max(records(dataset), key=lambda r: len(r["trajectory"]))
    images = [Image.open(dataset / p).convert("RGB") for p in row["images"]]
    tools = json.loads((dataset / "tools.json").read_text())
    out = processor.apply_chat_template(row["messages"], tools=tools, tokenize=False)
    assert out.startswith("<|im_start|>system\nYou restore") and "\n\n# Tools\n" in out
    assert out.count("<|image_pad|>") == len(images) and out.count('<tool_call>\n{"name": "') == len(row["trajectory"])
    encoded = processor(text=[out], images=images, return_tensors="pt")
    assert encoded["input_ids"].shape[1] > 0 and encoded["pixel_values"].shape[0] > 0


def test_an_earlier_runs_searches_are_replayed_not_searched_again(dataset, clean_dir, tmp_path, capsys):
    out = tmp_path / "again"
    before = {r["id"]: r for r in records(dataset) if r["kind"] == "searched"}
    assert main(["train", "gen-sft", "--clean", str(clean_dir), "--out", str(out), "--images", str(len(before) + 1), *ARGS, "--reuse_search", str(dataset)]) == 0
    after = {r["id"]: r for r in records(out) if r["kind"] == "searched"}
    assert set(before) < set(after)  # one more image: new, and searched
    for key, r in after.items():
        assert r["reused_search"] == (key in before)
        if key in before:
            assert r["trajectory"] == before[key]["trajectory"] and r["search_calls"] == before[key]["search_calls"]
            assert r["gain"]["psnr"] == pytest.approx(before[key]["gain"]["psnr"], abs=1e-4)
    assert json.loads((out / "card.json").read_text())["reused_searches"] == len(before)
    assert main(["train", "gen-sft", "--clean", str(clean_dir), "--out", str(tmp_path / "other"), *ARGS, "--crop", "48", "--reuse_search", str(dataset)]) == 2
    assert "other crop" in capsys.readouterr().err


def test_a_context_window_is_the_same_scene_degraded_alike(clean_dir):
    from tiragent.errors import TirAgentError
    from tiragent.train.configs import GenSFTConfig
    from tiragent.train.samples import Sample, make_pair, make_pair_in_context

    source = sorted(clean_dir.iterdir())[0].name
    clean_sample, small = Sample(0, source, (), 11), Sample(1, source, ("lowres",), 12)
    degraded, clean, window = make_pair_in_context(clean_sample, clean_dir, 48, context=100)
    assert np.array_equal(degraded, clean) and window.shape == (100, 100, 3)
    hits = [(y, x) for y in range(53) for x in range(53) if np.array_equal(window[y : y + 48, x : x + 48], clean)]
    assert len(hits) == 1  # the crop lies inside its window
    degraded, clean, window = make_pair_in_context(small, clean_dir, 48, context=96)
    assert degraded.shape == (12, 12, 3) and window.shape == (24, 24, 3)  # the same x4 downscale
    assert all(np.array_equal(a, b) for a, b in zip(make_pair(small, clean_dir, 48), (degraded, clean)))
    assert make_pair_in_context(small, clean_dir, 48, context=48)[2] is None
    assert make_pair_in_context(small, clean_dir, 48, context=500)[2].shape == (30, 30, 3)  # clipped to the 120-px photo
    with pytest.raises(TirAgentError, match="larger than --crop"):
        GenSFTConfig(clean=clean_dir, out=clean_dir, crop=64, perception=True, perception_context=64)
    with pytest.raises(TirAgentError, match="needs --perception"):
        GenSFTConfig(clean=clean_dir, out=clean_dir, crop=64, perception_context=96)


def test_the_prompts_detector_reading_is_of_the_context_window(clean_dir, tmp_path):
    import anyio

    from tiragent.agent.conversation import ViewConfig, perceived
    from tiragent.agent.session import open_session
    from tiragent.train.samples import make_pair_in_context

    out = tmp_path / "context"
    args = [*ARGS, "--perception", "--short_prompt", "--perception_context", "112", "--search_metrics", "psnr"]
    assert main(["train", "gen-sft", "--clean", str(clean_dir), "--out", str(out), "--images", "3", *args]) == 0
    rows = [r for r in records(out) if r["kind"] == "searched"]
    samples = plan(3, sorted(clean_dir.iterdir()), seed=3, single_ratio=0.5, clean_ratio=0.25)

    async def readings() -> tuple[list[str], list[str]]:
        async with open_session(device="cpu") as session:
            views = ViewConfig(perception=True)
            of_window, of_crop = [], []
            for sample in samples:
                degraded, _, window = make_pair_in_context(sample, clean_dir, 64, context=112)
                of_window.append(await perceived(session, await session.load(window), views))
                of_crop.append(await perceived(session, await session.load(degraded), views))
            return of_window, of_crop

    of_window, of_crop = anyio.run(readings)
    said = [r["messages"][1]["content"][-1]["text"].split("\n")[-1] for r in sorted(rows, key=lambda r: r["id"])]
    assert said == of_window and said[0].startswith("detector:")
    assert of_window != of_crop  # the window reads otherwise than the small crop would
