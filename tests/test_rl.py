"""`tir-agent train rl`: rollouts token in and token out, generation batched across episodes, and the whole pipeline
(gen-sft, SFT, RL, restore) against a real `tir-agent serve`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import anyio
import numpy as np
import pytest
from conftest import free_port, http_client

from tiragent.agent.actions import Action
from tiragent.agent.conversation import ViewConfig, call_turn, result_text, result_turn, stop_turn, system_turn, task_turn, tool_schemas
from tiragent.agent.policy import NO_REFERENCE_METRICS
from tiragent.cli import main
from tiragent.images import write_image
from tiragent.train.rollout import Generator, RolloutSettings, play, prepare, run_groups
from tiragent.train.samples import Sample

pytestmark = pytest.mark.anyio

CALL = '<tool_call>\n{"name": "dehaze", "arguments": {"model": "dcp"}}\n</tool_call>'


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory):
    from skimage import data
    from skimage.transform import resize

    folder = tmp_path_factory.mktemp("clean")
    write_image(resize(data.astronaut(), (160, 200), anti_aliasing=True).astype(np.float32), folder / "a.png")
    write_image(resize(data.coffee(), (96, 128), anti_aliasing=True).astype(np.float32), folder / "b.png")
    return folder


@pytest.fixture
def processor(checkpoint):
    from transformers import AutoProcessor

    from tiragent.agent.tiny import chat_template

    processor = AutoProcessor.from_pretrained(checkpoint)
    processor.chat_template = chat_template()
    return processor


class Scripted:
    """Stands in for the policy's sampler: answers each turn with the next scripted reply, as token ids."""

    max_new_tokens = 64

    def __init__(self, processor, replies):
        self.eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.replies = [processor.tokenizer.encode(r) + [self.eos] for r in replies]
        self.live = 0

    async def __call__(self, episode):
        return self.replies.pop(0)


async def test_an_episode_s_tokens_are_the_template_s_rendering_of_its_conversation(session, processor, clean_dir):
    views = ViewConfig(whole=96, crop=64)
    space = await session.action_space()
    settings = RolloutSettings(views=views, tools=tool_schemas(space), crop=128, dimensions=("psnr", "ssim"))
    prepared = await prepare(session, processor, Sample(0, "a.png", ("haze",), 3), clean_dir, settings)
    episode = await play(session, Scripted(processor, [CALL, "STOP"]), processor, space, prepared, settings)
    assert episode.stopped and not episode.invalid and episode.steps == ["dehaze.dcp"]

    # the same episode as a conversation, rendered by the template the policy acts with
    from tiragent.agent.conversation import fetch_views
    from tiragent.agent.policies.qwen import _pil

    result = await session.apply(Action("dehaze", "dcp"), prepared.original_id)
    metrics = await session.assess(result.image_id, metrics=NO_REFERENCE_METRICS)
    first = [_pil(v) for v in await fetch_views(session, prepared.original_id, 128, 128, views)]
    second = [_pil(v) for v in await fetch_views(session, result.image_id, result.width, result.height, views)]
    conversation = [system_turn(), task_turn(first), call_turn("dehaze", {"model": "dcp"}),
                    result_turn(result_text("dehaze", "dcp", metrics), second), stop_turn()]  # fmt: skip
    rendered = processor.apply_chat_template(conversation, tools=settings.tools, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, trained = list(np.asarray(rendered["input_ids"]).reshape(-1)), list(np.asarray(rendered["assistant_masks"]).reshape(-1))
    assert processor.tokenizer.decode(ids[len(episode.ids) :]) == "\n"  # all but the newline after the last turn
    assert episode.ids == ids[: len(episode.ids)]  # token for token
    assert [0] * len(episode.prompt_ids) + episode.tool_mask == trained[: len(episode.ids)]  # trained on exactly what SFT trains on
    assert sum(int(g.prod(-1).sum()) for g in episode.grids) // 4 == episode.ids.count(processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    assert episode.outcome.tool_calls == 1 and set(episode.outcome.after) == {"psnr", "ssim"}


async def test_an_invalid_call_ends_the_episode_and_says_why(session, processor, clean_dir):
    space = await session.action_space()
    settings = RolloutSettings(views=ViewConfig(whole=64, crop=0), tools=tool_schemas(space, short=True), crop=96, dimensions=("psnr",))
    prepared = await prepare(session, processor, Sample(0, "b.png", ("noise",), 1), clean_dir, settings)
    bad = '<tool_call>\n{"name": "denoise", "arguments": {"model": "nope"}}\n</tool_call>'
    episode = await play(session, Scripted(processor, [bad]), processor, space, prepared, settings)
    assert "has no model 'nope'" in episode.invalid and episode.outcome.invalid and episode.outcome.tool_calls == 0
    refused = '<tool_call>\n{"name": "denoise", "arguments": {"model": "wavelet", "sigma": -3}}\n</tool_call>'
    episode = await play(session, Scripted(processor, [refused]), processor, space, prepared, settings)
    assert episode.invalid.startswith("the server refused the call") and episode.steps == []


async def test_generation_is_batched_across_the_episodes_in_flight(session, checkpoint, processor, clean_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    space = await session.action_space()
    settings = RolloutSettings(views=ViewConfig(whole=64, crop=0, short_prompt=True), tools=tool_schemas(space, short=True), crop=96,
                               max_turns=2, dimensions=("psnr",))  # fmt: skip
    samples = [Sample(0, "a.png", ("noise",), 1), Sample(1, "b.png", ("jpeg",), 2)]
    together = Generator(model, processor, max_new_tokens=8)
    episodes = await run_groups(session, together, processor, samples, 3, clean_dir, settings)
    alone = Generator(model, processor, max_new_tokens=8)
    await run_groups(session, alone, processor, samples, 3, clean_dir, settings, concurrency=1)
    assert [e.sample.index for e in episodes] == [0, 0, 0, 1, 1, 1]  # in the order of the samples, group by group
    assert max(together.batches) == 6 and set(alone.batches) == {1}
    assert all(e.outcome is not None and len(e.tool_mask) == len(e.completion_ids) for e in episodes)

    # greedy: a batch (left-padded, prompts of different lengths) generates what each episode generates alone
    samples = [Sample(0, "a.png", ("lowres",), 1), Sample(1, "b.png", ("jpeg",), 2)]
    together = await run_groups(session, Generator(model, processor, max_new_tokens=8, sample=False), processor, samples, 2, clean_dir, settings)
    alone = await run_groups(session, Generator(model, processor, max_new_tokens=8, sample=False), processor, samples, 2, clean_dir, settings,
                             concurrency=1)  # fmt: skip
    assert len({len(e.prompt_ids) for e in together}) == 2
    assert [e.completion_ids for e in together] == [e.completion_ids for e in alone]


def test_the_adaptive_reward_scores_each_group_on_its_own():
    from tiragent.train.reward import AdaptiveReward, Outcome, RewardConfig
    from tiragent.train.rl import adaptive_reward

    reward = AdaptiveReward(RewardConfig(dimensions=["psnr"], call_cost=0.0))
    score = adaptive_reward(reward, 2)
    outcome = lambda after: Outcome({"psnr": 20.0}, {"psnr": after})  # noqa: E731
    rewards = score(None, None, outcome=[outcome(21), outcome(23), outcome(30), outcome(40)])
    assert rewards == pytest.approx([-1, 1, -1, 1], abs=1e-3)  # each group standardised on its own


async def test_the_prompt_reads_the_detector_on_the_context_window(session, processor, clean_dir, checkpoint, tmp_path, capsys):
    from tiragent.agent.conversation import perceived
    from tiragent.train.samples import make_pair_in_context

    views = ViewConfig(whole=64, crop=0, short_prompt=True, perception=True)
    space = await session.action_space()
    sample = Sample(0, "a.png", ("noise",), 5)
    settings = RolloutSettings(views=views, tools=tool_schemas(space, short=True), crop=64, dimensions=("psnr",), perception_context=144)
    prepared = await prepare(session, processor, sample, clean_dir, settings)
    _, _, window = make_pair_in_context(sample, clean_dir, 64, context=144)
    said = await perceived(session, await session.load(window), views)
    assert said.startswith("detector:") and said in processor.tokenizer.decode(prepared.prompt["input_ids"][0])
    assert said != await perceived(session, prepared.original_id, views)  # which the crop itself would not have given
    assert prepared.degraded.shape == (64, 64, 3)  # the episode still plays on the crop
    args = ["train", "rl", "--init", str(checkpoint), "--clean", str(clean_dir), "--out", str(tmp_path), "--crop", "176"]
    assert main([*args, "--perception_context", "160"]) == 2
    assert "must be 0 or larger than --crop 176" in capsys.readouterr().err


def test_reward_dimensions_that_need_larger_images_are_refused(clean_dir, tmp_path, checkpoint, capsys):
    args = ["train", "rl", "--init", str(checkpoint), "--clean", str(clean_dir), "--out", str(tmp_path), "--crop", "96"]
    assert main(args) == 2
    assert "ms_ssim needs images of at least 161 px a side; --crop is 96" in capsys.readouterr().err
    assert main([*args[:-2], "--group", "1"]) == 2
    assert "--group must be at least 2" in capsys.readouterr().err


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `tir-agent serve` over streamable HTTP, for the whole module."""
    port = free_port()
    root = tmp_path_factory.mktemp("serve-root")
    process = subprocess.Popen([sys.executable, "-m", "tiragent.cli", "serve", "--transport", "http", "--port", str(port), "--device", "cpu",
                                "--roots", str(root), "--preview_size", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.time() + 60
    import socket

    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=30)


async def status(url):
    async with http_client(url) as client:
        return (await client.call_tool("server_status", {})).structured_content


def restoration_calls(stats):
    from tiragent.tasks import TASK_NAMES

    return sum(s["calls"] for key, s in stats["pool"]["tools"].items() if key.split(".")[0] in TASK_NAMES)


@pytest.fixture(scope="module")
def wider(tmp_path_factory):
    """A tiny Qwen3-VL wide enough (128) to learn a tool call's JSON in a minute of SFT on the CPU."""
    from tiragent.agent.tiny import build_tiny_qwen

    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen-128"), hidden_size=128)


async def test_gen_sft_then_sft_then_rl_then_restore_against_a_real_server(server, clean_dir, wider, tmp_path, astronaut):
    run = lambda args: anyio.to_thread.run_sync(main, args)  # noqa: E731 - the CLI runs its own event loop
    data, sft, rl = tmp_path / "data", tmp_path / "sft", tmp_path / "rl"
    views = ["--whole_view", "48", "--crop_view", "0", "--short_prompt"]
    assert await run(["train", "gen-sft", "--clean", str(clean_dir), "--out", str(data), "--images", "4", "--crop", "64", "--server", server,
                      "--single_ratio", "1", "--clean_ratio", "0", "--substitute_ratio", "0", "--seed", "1", *views]) == 0  # fmt: skip
    assert await run(["train", "sft", "--data", str(data), "--model", str(wider), "--out", str(sft), "--max_steps", "60",
                      "--batch_size", "4", "--lr", "3e-3"]) == 0  # fmt: skip
    before = restoration_calls(await status(server))
    rl_args = ["train", "rl", "--init", str(sft), "--clean", str(clean_dir), "--out", str(rl), "--server", server, "--group", "4",
               "--batch", "2", "--crop", "64", "--max_new_tokens", "40", "--temperature", "0.3", "--clean_ratio", "0",
               "--dimensions", "psnr", "ssim", "--kl", "0.05", "--save_steps", "1", "--eval_clean", str(clean_dir), "--eval_images", "2", "--eval_steps", "1"]  # fmt: skip
    assert await run([*rl_args, "--steps", "2"]) == 0
    calls = restoration_calls(await status(server)) - before
    assert calls > 0, "no tool call of the RL rollouts reached the server"

    log = [json.loads(line) for line in (rl / "log.jsonl").read_text().splitlines()]
    steps = [row for row in log if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2] and all(math.isfinite(row["loss"]) for row in steps)
    assert all(math.isfinite(row["kl"]) for row in steps)  # the KL term to the initial policy (trl's reference model)
    for key in ("reward", "episodes/tool_calls", "episodes/invalid_rate", "weights/psnr", "diversity/distinct", "eval/psnr_db"):
        assert all(key in row for row in steps), key
    episodes = [json.loads(line) for line in (rl / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 2 * 2 * 4 and sum(len(e["steps"]) for e in episodes) > 0, [(e.get("invalid"), e.get("replies")) for e in episodes][:3]
    card = json.loads((rl / "tir_agent_rl.json").read_text())
    assert card["steps"] == 2 and card["episodes"] == 16 and card["recipe"]["group"] == "4"

    from transformers import AutoModelForImageTextToText

    AutoModelForImageTextToText.from_pretrained(rl / "checkpoint-1")  # checkpoints load back
    assert await run([*rl_args, "--steps", "3", "--resume"]) == 0  # resumes from checkpoint-2: one more step
    steps = [json.loads(line) for line in (rl / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert [row["step"] for row in steps] == [1, 2, 3]
    assert json.loads((rl / "tir_agent_rl.json").read_text())["steps"] == 3

    photo = tmp_path / "photo.png"
    write_image(astronaut, photo)
    assert await run(["restore", str(photo), "-o", str(tmp_path / "restored.png"), "--policy", str(rl), "--server", server, "--max-steps", "2"]) == 0
    assert (tmp_path / "restored.png").is_file()
    assert await run(["train", "plot", str(rl)]) == 0 and (rl / "plots" / "trends.png").is_file()
    assert await run(["report", str(rl)]) == 0  # the training run's trends, as one page
    assert (rl / "report.html").read_text().count("data:image/png;base64,") >= 5
