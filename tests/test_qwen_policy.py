"""The Qwen-VL policy on a tiny random Qwen3-VL built offline: template, parsing, and the loop."""

from __future__ import annotations

import pytest

from tiragent.agent.actions import Action, Stop
from tiragent.agent.conversation import tool_schemas
from tiragent.agent.loop import restore
from tiragent.agent.policies.qwen import QwenVLPolicy, parse_reply
from tiragent.agent.policy import create_policy
from tiragent.agent.tiny import build_tiny_qwen
from tiragent.errors import TirAgentError

pytestmark = pytest.mark.anyio


@pytest.fixture
def image(astronaut):
    return astronaut


async def test_template_renders_tool_calls_and_they_parse_back(checkpoint, session):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    space = await session.action_space()
    call = {"type": "function", "function": {"name": "denoise", "arguments": {"model": "nlm", "sigma": 25}}}
    messages = [
        {"role": "system", "content": "restore"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Restore this photo."}]},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": [{"type": "text", "text": "done"}, {"type": "image"}]},
    ]
    text = processor.apply_chat_template(messages, tools=tool_schemas(space), tokenize=False, add_generation_prompt=True)
    assert '"name": "denoise"' in text and "<tools>" in text and text.count("<|image_pad|>") == 2
    assert "<tool_response>" in text and text.endswith("<|im_start|>assistant\n")
    turn = text.split("<|im_start|>assistant")[1]
    assert parse_reply(turn, space) == Action("denoise", "nlm", {"sigma": 25})
    # Every tool call the template renders parses back to the same action.
    for task in space.tasks:
        for model in space.models[task]:
            rendered = processor.apply_chat_template(
                [{"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": task, "arguments": {"model": model}}}]}],
                tokenize=False,
            )
            assert parse_reply(rendered, space) == Action(task, model, {})


async def test_parse_reply_errors_name_the_problem(session):
    space = await session.action_space()
    assert isinstance(parse_reply("I think it is clean. STOP", space), Stop)
    assert parse_reply('<tool_call>{"name": "dehaze", "arguments": {}}</tool_call>', space) == Action("dehaze", "hazenet", {})
    for reply, problem in [
        ("hello", "no <tool_call>"),
        ("<tool_call>{not json}</tool_call>", "not valid JSON"),
        ('<tool_call>{"name": "paint", "arguments": {}}</tool_call>', "unknown tool 'paint'"),
        ('<tool_call>{"name": "dehaze", "arguments": {"model": "x"}}</tool_call>', "has no model 'x'"),
        ('<tool_call>\n{"name": {"model": "unet"}, "arguments": {}}\n</tool_call>', 'needs a string "name"'),
        ('<tool_call>{"name": "dehaze", "arguments": "dcp"}</tool_call>', 'an object "arguments"'),
        ('<tool_call>{"name": "dehaze", "arguments": {"model": {"model": "dcp"}}}</tool_call>', "has no model"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_reply(reply, space)


@pytest.fixture(scope="module")
def checkpoint_qwen25(tmp_path_factory):
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen25"), arch="qwen2_5_vl")


@pytest.mark.parametrize("which", ["qwen3_vl", "qwen2_5_vl"])
async def test_tiny_policy_runs_and_stops_cleanly_on_malformed_output(which, checkpoint, checkpoint_qwen25, session, image):
    policy = create_policy(str(checkpoint if which == "qwen3_vl" else checkpoint_qwen25), max_new_tokens=8)
    expected = {"qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}[which]
    assert type(policy.model).__name__ == expected
    assert isinstance(policy, QwenVLPolicy)
    result, trajectory = await restore(session, image, policy)
    assert result.shape == image.shape
    assert trajectory.stop_reason.startswith("malformed tool call after 2 tries") or len(trajectory.steps) <= policy.default_max_steps


async def test_valid_replies_become_tool_calls_with_the_results_fed_back(checkpoint, session, image):
    policy = QwenVLPolicy(str(checkpoint), max_new_tokens=8)
    replies = iter(['<tool_call>{"name": "dehaze", "arguments": {"model": "dcp", "omega": 0.9}}</tool_call>', "STOP"])
    seen_messages = []

    def scripted(tools):
        seen_messages.append(len(policy.messages))
        policy.processor.apply_chat_template(policy.messages, tools=tools, add_generation_prompt=True, tokenize=True)
        return next(replies)

    policy.generate = scripted
    _, trajectory = await restore(session, image, policy)
    assert [s.key for s in trajectory.steps] == ["dehaze.dcp"] and trajectory.steps[0].params["omega"] == 0.9
    assert trajectory.stop_reason == "policy answered STOP"
    assert seen_messages == [2, 4]  # the second decision saw the tool call and its result
    assert policy.messages[-1]["role"] == "tool" and any(p["type"] == "image" for p in policy.messages[-1]["content"])


async def test_a_lora_adapter_loads_with_peft(checkpoint, tmp_path, session, image):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(checkpoint)
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    adapted.save_pretrained(tmp_path / "adapter")
    policy = QwenVLPolicy(str(checkpoint), adapter=str(tmp_path / "adapter"), max_new_tokens=4)
    assert type(policy.model).__name__ == "PeftModelForCausalLM" or hasattr(policy.model, "peft_config")
    _, trajectory = await restore(session, image, policy, max_steps=1)
    assert len(trajectory.steps) <= 1


def test_an_older_copy_of_the_projects_template_is_replaced(checkpoint, tmp_path):
    import shutil

    from transformers import AutoProcessor

    from tiragent.agent.policies.qwen import OUR_TEMPLATE_MARK
    from tiragent.agent.tiny import chat_template

    old = tmp_path / "old"
    shutil.copytree(checkpoint, old)
    processor = AutoProcessor.from_pretrained(old)
    processor.chat_template = chat_template().replace("{% generation %}", "").replace("{% endgeneration %}", "")  # as saved before
    processor.save_pretrained(old)
    assert OUR_TEMPLATE_MARK in chat_template()
    assert QwenVLPolicy(str(old)).processor.chat_template == chat_template()


async def test_perception_and_shuffled_tools_reach_the_prompt(checkpoint, session, image):
    from tiragent.agent.conversation import ViewConfig

    policy = QwenVLPolicy(str(checkpoint), max_new_tokens=8, views=ViewConfig(whole=64, crop=0, short_prompt=True, perception=True), shuffle_tools=3)
    orders = []

    def scripted(tools):
        orders.append([t["function"]["name"] for t in tools])
        return "STOP"

    policy.generate = scripted
    space = await session.action_space()
    for _ in range(3):
        await restore(session, image, policy)
    prompt = policy.messages[1]["content"][-1]["text"]
    assert prompt.startswith("Restore this photo.\ndetector: ")
    assert sorted(orders[0]) == sorted(space.tasks) and len({tuple(o) for o in orders}) > 1  # another order per episode


def test_perception_text_is_short_and_ordered():
    from tiragent.agent.conversation import perception_text

    found = {"tasks": {"denoise": 0.93, "dejpeg": 0.41, "sr": 0.05, "dehaze": 0.2}, "severity": {"noise": 24.4, "jpeg": 31.0}}
    assert perception_text(found) == "detector: denoise 0.9 (sigma 24), dejpeg 0.4 (quality 31), dehaze 0.2"
    assert perception_text({"tasks": {"sr": 0.1}}) == "detector: nothing"


async def test_a_task_asked_for_again_ends_the_episode_unless_allowed(checkpoint, session, image):
    replies = ['<tool_call>{"name": "dehaze", "arguments": {"model": "dcp"}}</tool_call>'] * 3 + ["STOP"]
    for allowed, calls in [(False, 1), (True, 3)]:
        policy = QwenVLPolicy(str(checkpoint), repeat_tasks=allowed)
        it = iter(replies)
        policy.generate = lambda tools, it=it: next(it)
        _, trajectory = await restore(session, image, policy)
        assert len(trajectory.steps) == calls
    assert not allowed or trajectory.stop_reason == "policy answered STOP"


def test_the_first_step_probe_scores_every_candidate(checkpoint, tmp_path):
    """benchmarks/first_step.py: every tool call and STOP scored, a log-probability (finite, negative), and the
    ranking printed; the probe is what found the shipped policy reading image size (docs/policy.md)."""
    import math
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np
    from skimage import data

    from tiragent.images import write_image

    write_image(data.astronaut()[:96, :80].astype(np.float32) / 255, tmp_path / "a.png")
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "first_step.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path), "--policy", str(checkpoint), "--top", "3"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [line.split(" | ") for line in out.stdout.splitlines() if line.startswith("| a.png")]
    assert len(rows) == 1 and rows[0][1] == "80x96"
    ranked = [rows[0][3], *rows[0][4].rstrip(" |").split(", ")]
    scores = [float(item.rsplit(" ", 1)[1]) for item in ranked]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and all(s < 0 and math.isfinite(s) for s in scores)


@pytest.mark.parametrize("which", ["qwen3_vl", "qwen2_5_vl"])
async def test_ranked_scores_are_each_replys_likelihood_in_the_whole_conversation(which, checkpoint, checkpoint_qwen25, session, image):
    """``decode=rank`` runs the prompt once and continues every candidate from its cache in one padded batch; each score
    must be what the reply's tokens get when the whole conversation is rendered and run alone (images, M-RoPE positions
    past the images, and padding handled alike)."""
    import torch

    from tiragent.agent.conversation import ViewConfig, call_turn, stop_turn

    checkpoint = checkpoint if which == "qwen3_vl" else checkpoint_qwen25

    policy = QwenVLPolicy(str(checkpoint), decode="rank", views=ViewConfig(whole=64, crop=32, short_prompt=True, perception=True))
    _, trajectory = await restore(session, image, policy, max_steps=2)
    assert trajectory.steps or trajectory.stop_reason == "policy answered STOP"
    space = await session.action_space()
    tools = tool_schemas(space, short=True)
    replies = [Stop(reason="x"), Action("denoise", space.models["denoise"][0]), Action("sr", space.models["sr"][-1])]
    batched = policy.score(tools, replies, chunk=2)  # two chunks, different padding in each
    processor = policy.processor
    images = [p["image"] for m in policy.messages if isinstance(m.get("content"), list) for p in m["content"] if p.get("type") == "image"]
    prompt = processor.apply_chat_template(policy.messages, tools=tools, add_generation_prompt=True, tokenize=False)
    start = processor(text=[prompt], images=images, return_tensors="pt")["input_ids"].shape[1]
    for reply, score in zip(replies, batched, strict=True):
        turn = stop_turn() if isinstance(reply, Stop) else call_turn(reply.task, {"model": reply.model})
        full = processor.apply_chat_template([*policy.messages, turn], tools=tools, tokenize=False)
        inputs = processor(text=[full], images=images, return_tensors="pt")
        with torch.inference_mode():
            logprobs = torch.log_softmax(policy.model(**inputs).logits[0].float(), -1)
        ids = inputs["input_ids"][0]
        end = int((ids[start:] == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")).nonzero()[0]) + start + 1
        alone = float(logprobs[torch.arange(start - 1, end - 1), ids[start:end]].sum())
        assert score == pytest.approx(alone, abs=1e-3)
        assert score < 0


async def test_ranked_decoding_takes_the_likeliest_valid_reply_and_the_gate_keeps_to_the_detector(checkpoint, session, image):
    policy = QwenVLPolicy(str(checkpoint), decode="rank")
    space = await session.action_space()
    chosen = []
    score = policy.score

    def spy(tools, replies, chunk=32):
        scores = score(tools, replies, chunk)
        chosen.append((replies, replies[max(range(len(replies)), key=scores.__getitem__)]))
        return scores

    policy.score = spy
    _, trajectory = await restore(session, image, policy, max_steps=3)
    first, best = chosen[0]
    assert len(first) == sum(len(m) for m in space.models.values()) + 1 and isinstance(first[-1], Stop)
    assert [s.key for s in trajectory.steps] == [f"{b.task}.{b.model}" for _, b in chosen if isinstance(b, Action)]
    for (replies, _), step in zip(chosen[1:], trajectory.steps, strict=False):
        assert all(r.task != step.task for r in replies if isinstance(r, Action))  # a task runs once
    # The gate: only what the detector reads at least that likely, besides STOP.
    gated = QwenVLPolicy(str(checkpoint), decode="rank", gate=0.5)
    await restore(session, image, gated, max_steps=0)
    found = await session.detect(await session.load(image))
    likely = {t for t, p in found.items() if p >= 0.5}
    assert {r.task for r in gated.candidates(space) if isinstance(r, Action)} == likely
    nothing = QwenVLPolicy(str(checkpoint), decode="rank", gate=1.01)
    _, trajectory = await restore(session, image, nothing)
    assert trajectory.steps == [] and trajectory.stop_reason == "policy answered STOP"


def test_policy_options_come_after_a_question_mark(checkpoint):
    from tiragent.agent.policy import policy_options
    from tiragent.errors import TirAgentError

    assert policy_options("tir?decode=rank&gate=0.2") == ("tir", {"decode": "rank", "gate": 0.2})
    assert policy_options("runs/x") == ("runs/x", {})
    with pytest.raises(TirAgentError, match="'gate' is not key=value"):
        policy_options("tir?gate")
    policy = create_policy(f"{checkpoint}?decode=rank&gate=0.3")
    assert (policy.decode, policy.gate, policy.name) == ("rank", 0.3, f"{checkpoint}?decode=rank&gate=0.3")
    with pytest.raises(TirAgentError, match="takes no option among colour"):
        create_policy("fixed?colour=red")
    with pytest.raises(TirAgentError, match="decode must be"):
        create_policy(f"{checkpoint}?decode=beam")


async def test_a_strong_detector_prior_makes_the_ranked_choice_the_detectors(checkpoint, session, image):
    """With ``prior`` far above the policy's own log-likelihoods, the choice is the detector's: its likeliest task if
    that beats doing nothing (``log p`` against the sum of ``log (1 - p)``), STOP otherwise."""
    import math

    policy = QwenVLPolicy(str(checkpoint), decode="rank", prior=1000.0)
    _, trajectory = await restore(session, image, policy, max_steps=1)
    found = {t: min(0.99, max(0.01, p)) for t, p in (await session.detect(await session.load(image))).items()}
    best = max(found, key=found.get)
    if math.log(found[best]) > sum(math.log(1 - q) for q in found.values()):
        assert [s.task for s in trajectory.steps] == [best]
    else:
        assert trajectory.steps == [] and trajectory.stop_reason == "policy answered STOP"
    assert policy.detector_logodds(Stop(reason="x"), await session.action_space()) < 0


async def test_scale_match_keeps_the_fixed_scale_model_nearest_the_detected_factor(checkpoint, session):
    """An x2 network on a photo the detector reads as x4 smaller is no candidate, nor the x4 network at x2; models
    whose ``scale`` argument sets the factor stay, and with no reading every model does."""
    space = await session.action_space()
    fixed = {m: f.scale for m, f in space.facts["sr"].items() if f.scale not in (None, 1)}
    assert sorted(set(fixed.values())) == [2, 4]
    policy = QwenVLPolicy(str(checkpoint), decode="rank", scale_match=True)
    policy.found = {t: 1.0 for t in space.tasks}
    for factor, kept in ((2.3, 2), (3.1, 4), (4.0, 4)):
        policy.severity = {"lowres": factor}
        sr = {r.model for r in policy.candidates(space) if isinstance(r, Action) and r.task == "sr"}
        assert sr == {m for m in space.models["sr"] if fixed.get(m, kept) == kept}
        assert {r.task for r in policy.candidates(space) if isinstance(r, Action)} == set(space.tasks)
    policy.severity = {}
    assert {r.model for r in policy.candidates(space) if isinstance(r, Action) and r.task == "sr"} == set(space.models["sr"])
    with pytest.raises(TirAgentError, match="need decode='rank'"):
        QwenVLPolicy(str(checkpoint), decode="generate", scale_match=True)


async def test_default_models_rank_tasks_by_their_summed_likelihood_and_call_the_servers_default(checkpoint, session, image):
    """``models='default'``: a task's score is the log of its replies' summed probabilities, its call the server's
    default model; STOP keeps its own score."""
    import math

    from tiragent.agent.policies.qwen import by_task

    space = await session.action_space()
    replies = [Action("denoise", "nlm"), Action("denoise", "unet"), Action("lowlight", "gamma"), Stop(reason="x")]
    merged, scores = by_task(replies, [math.log(0.2), math.log(0.3), math.log(0.4), math.log(0.1)], space)
    got = dict(zip([r.task if isinstance(r, Action) else "STOP" for r in merged], scores, strict=True))
    assert got == pytest.approx({"denoise": math.log(0.5), "lowlight": math.log(0.4), "STOP": math.log(0.1)})
    assert {r.model for r in merged if isinstance(r, Action)} == {space.defaults["denoise"], space.defaults["lowlight"]}
    # Through the policy: every call it makes is its task's default model.
    policy = QwenVLPolicy(str(checkpoint), decode="rank", models="default")
    _, trajectory = await restore(session, image, policy, max_steps=3)
    assert all(step.model == space.defaults[step.task] for step in trajectory.steps)
    with pytest.raises(TirAgentError, match="need decode='rank'"):
        QwenVLPolicy(str(checkpoint), models="default")


async def test_a_policy_is_shown_and_chooses_among_the_tools_it_was_trained_on(checkpoint, session, image, tmp_path):
    """A model the server gained after training (here: one left out of the saved list) is not in the policy's prompt
    nor among its replies; with ``models='default'`` a task it chooses still runs with the server's default."""
    import shutil

    from tiragent.agent.conversation import TOOLS_FILE, tool_schemas, write_trained_tools

    space = await session.action_space()
    known = {t: [m for m in ms if m != space.defaults["lowlight"]] for t, ms in space.models.items()}
    narrowed = space.restricted(known)
    assert space.defaults["lowlight"] not in narrowed.models["lowlight"] and narrowed.defaults["lowlight"] == known["lowlight"][0]
    assert narrowed.schemas["lowlight"]["properties"]["model"]["enum"] == known["lowlight"]
    assert space.restricted({"denoise": ["nlm", "no-such-model"]}).models == {"denoise": ["nlm"]}
    folder = tmp_path / "policy"
    shutil.copytree(checkpoint, folder)
    write_trained_tools(folder, tool_schemas(narrowed, short=True))
    assert (folder / TOOLS_FILE).is_file()
    policy = QwenVLPolicy(str(folder), decode="rank")
    prompts = []
    score = policy.score

    def spy(tools, replies, chunk=32):
        prompts.append((tools, replies))
        return score(tools, replies, chunk)

    policy.score = spy
    await restore(session, image, policy, max_steps=1)
    tools, replies = prompts[0]
    shown = {t["function"]["name"]: t["function"].get("models") or t["function"]["parameters"]["properties"]["model"]["enum"] for t in tools}
    assert shown == known
    assert all(r.model in known[r.task] for r in replies if isinstance(r, Action))
