"""`tir-agent train sft`: trl's SFTTrainer on gen-sft conversations, with the tools and the images of tool turns."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mcp import Client

from tiragent.agent.loop import restore
from tiragent.agent.policies.qwen import QwenVLPolicy
from tiragent.agent.session import ToolSession
from tiragent.cli import main
from tiragent.images import write_image
from tiragent.server.app import ServerConfig, build_server
from tiragent.train.sft import ToolConversationCollator, conversations

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from skimage import data as samples
    from skimage.transform import resize

    clean = tmp_path_factory.mktemp("clean")
    write_image(resize(samples.astronaut(), (96, 96), anti_aliasing=True).astype(np.float32), clean / "a.png")
    out = tmp_path_factory.mktemp("sft-data")
    args = ["train", "gen-sft", "--clean", str(clean), "--out", str(out), "--images", "2", "--crop", "64", "--single_ratio", "0.5",
            "--clean_ratio", "0.5", "--whole_view", "48", "--crop_view", "0", "--short_prompt", "--perception", "--search_metrics", "psnr",
            "--device", "cpu", "--seed", "1"]  # fmt: skip
    assert main(args) == 0
    return out


def test_the_task_prompt_carries_the_detectors_reading(data):
    for row in conversations(data):
        prompt = row["messages"][1]["content"][-1]["text"]
        assert prompt.startswith("Restore this photo.\ndetector: "), prompt
    assert json.loads((data / "card.json").read_text())["config"]["search_metrics"] == ["psnr"]


def test_the_collator_trains_on_what_the_policy_says_and_nothing_else(checkpoint, data):
    from transformers import AutoProcessor

    from tiragent.agent.tiny import chat_template

    processor = AutoProcessor.from_pretrained(checkpoint)
    processor.chat_template = chat_template()
    collator = ToolConversationCollator(processor, json.loads((data / "tools.json").read_text()), data)
    rows = conversations(data)
    batch = collator([{"conversation": json.dumps(r)} for r in rows])
    assert batch["input_ids"].shape == batch["labels"].shape and "pixel_values" in batch
    for i, row in enumerate(rows):
        trained = processor.tokenizer.decode(batch["labels"][i][batch["labels"][i] != -100])
        calls = [m["tool_calls"][0]["function"] for m in row["messages"] if m.get("tool_calls")]
        expected = "".join(f'<tool_call>\n{{"name": "{c["name"]}", "arguments": {json.dumps(c["arguments"])}}}\n</tool_call><|im_end|>' for c in calls)
        assert trained == expected + "STOP<|im_end|>"


async def test_sft_trains_saves_and_the_policy_runs(checkpoint, data, tmp_path, astronaut):
    out = tmp_path / "policy"
    assert main(["train", "sft", "--data", str(data), "--model", str(checkpoint), "--out", str(out), "--max_steps", "2", "--batch_size", "2"]) == 0
    card = json.loads((out / "tir_agent_sft.json").read_text())
    assert card["steps"] == 2 and math.isfinite(card["first_loss"]) and math.isfinite(card["last_loss"])
    policy = QwenVLPolicy(str(out), max_new_tokens=8)
    async with Client(build_server(ServerConfig(roots=[tmp_path], preview_size=0))) as client:
        result, trajectory = await restore(ToolSession(client), astronaut, policy, max_steps=2)
    assert result.shape == astronaut.shape and trajectory.stop_reason

    from tiragent.train.ship_policy import ship

    card = ship(out, tmp_path / "shipped", init=checkpoint)
    assert card["sft"]["steps"] == 2 and card["sft_data"]["conversations"] == len(conversations(data)) and card["rl"] is None
    assert "2 steps" in (tmp_path / "shipped" / "card.md").read_text()
    assert QwenVLPolicy(str(tmp_path / "shipped")).views.perception  # the views travel with the weights
    # and so do the tools it learned, the data's own list
    assert json.loads((tmp_path / "shipped" / "tir_agent_tools.json").read_text()) == json.loads((data / "tools.json").read_text())
    assert QwenVLPolicy(str(tmp_path / "shipped")).trained == {t["function"]["name"]: t["function"]["models"] for t in json.loads((data / "tools.json").read_text())}
    assert "Decoding: greedy generation." in (tmp_path / "shipped" / "card.md").read_text()
    # The decoding travels with them too, set again without a run; what a caller gives wins, and another decode
    # does not inherit the saved gate and prior.
    from tiragent.agent.policies.qwen import DecodingConfig
    from tiragent.train.ship_policy import set_decoding

    set_decoding(tmp_path / "shipped", DecodingConfig("rank", 0.5, 1.0))
    assert "at least 0.5 likely" in (tmp_path / "shipped" / "card.md").read_text()
    assert json.loads((tmp_path / "shipped" / "card.json").read_text())["sft"]["steps"] == 2
    shipped = QwenVLPolicy(str(tmp_path / "shipped"))
    assert (shipped.decode, shipped.gate, shipped.prior) == ("rank", 0.5, 1.0)
    assert QwenVLPolicy(str(tmp_path / "shipped"), gate=0.2).decoding == DecodingConfig("rank", 0.2, 1.0)
    assert QwenVLPolicy(str(tmp_path / "shipped"), decode="generate").decoding == DecodingConfig()
    set_decoding(tmp_path / "shipped", DecodingConfig("rank", 0.5, 1.0, models="default"))
    assert "run with the server's default model" in (tmp_path / "shipped" / "card.md").read_text()
    assert QwenVLPolicy(str(tmp_path / "shipped")).decoding.models == "default"
    with pytest.raises(SystemExit, match="over the 0 MB budget"):
        ship(out, tmp_path / "too-big", init=checkpoint, budget_mb=0)


def test_missing_data_is_named(tmp_path, capsys):
    assert main(["train", "sft", "--data", str(tmp_path), "--model", "x", "--out", str(tmp_path / "o")]) == 2
    assert "data.jsonl does not exist" in capsys.readouterr().err


def test_an_image_whose_tool_call_fails_is_skipped_and_named(tmp_path, monkeypatch, capsys):
    from skimage import data as samples
    from skimage.transform import resize

    from tiragent.agent.session import ToolCallError
    from tiragent.train import sft_data

    clean = tmp_path / "clean"
    write_image(resize(samples.astronaut(), (80, 80), anti_aliasing=True).astype(np.float32), clean / "a.png")
    real = sft_data._one

    async def failing_first(session, sample, config, space, reuse=None):
        if sample.index == 0:
            raise ToolCallError("denoise: the tool failed")
        return await real(session, sample, config, space, reuse)

    monkeypatch.setattr(sft_data, "_one", failing_first)
    out = tmp_path / "data"
    args = ["train", "gen-sft", "--clean", str(clean), "--out", str(out), "--images", "3", "--crop", "64", "--clean_ratio", "1", "--single_ratio", "0",
            "--whole_view", "48", "--crop_view", "0", "--short_prompt", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert "image 0 (a.png, clean) skipped: denoise: the tool failed" in capsys.readouterr().err
    assert json.loads((out / "failed.jsonl").read_text())["index"] == 0
    card = json.loads((out / "card.json").read_text())
    assert card["failed_images"] == 1 and card["images"] == 2


def test_sft_starts_from_a_pretrained_tower_and_the_shipped_card_says_so(checkpoint, data, tmp_path):
    from tiragent.train.ship_policy import ship

    clean = tmp_path / "photos"
    clean.mkdir()
    for i in range(2):
        write_image(np.random.default_rng(i).random((80, 96, 3)).astype(np.float32), clean / f"p{i}.png")
    vision = tmp_path / "vision"
    args = ["train", "vision", "--model", str(checkpoint), "--out", str(vision), "--data", str(clean), "--whole_view", "48", "--crop_view", "0",
            "--samples", "4", "--val_samples", "2", "--steps", "2", "--batch", "2", "--workers", "1", "--val_fraction", "0.5"]  # fmt: skip
    assert main(args) == 0
    out = tmp_path / "policy"
    assert main(["train", "sft", "--data", str(data), "--model", str(vision), "--out", str(out), "--max_steps", "1", "--batch_size", "2"]) == 0
    card = ship(out, tmp_path / "shipped")
    assert card["vision"]["recipe"]["steps"] == 2 and card["model"]["parameters"] > 0
    assert "Vision tower pretrained" in (tmp_path / "shipped" / "card.md").read_text()
