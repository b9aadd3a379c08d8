"""A Qwen-VL policy (Qwen2.5-VL or Qwen3-VL on transformers) that calls the restoration tools directly.

The model sees the original image, then after each step the tool's result (text and the
new image), and answers with one ``<tool_call>{"name": TASK, "arguments": {...}}</tool_call>``
or ``STOP``. Checkpoints load from a local folder or a hub id (nothing is downloaded in
tests); a LoRA adapter is applied with peft. Stock Qwen2.5-VL templates cannot render
tools, so a tool-capable template (``agent/templates/qwen_vl_tools.jinja``) replaces any
template without tool support.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tiragent.agent.actions import Action, Stop
from tiragent.agent.conversation import (
    ViewConfig,
    call_turn,
    error_turn,
    fetch_views,
    perception_text,
    read_trained_models,
    read_views,
    result_text,
    result_turn,
    stop_turn,
    system_turn,
    task_turn,
    tool_schemas,
)
from tiragent.agent.policy import Observation, register_policy
from tiragent.agent.session import ActionSpace
from tiragent.agent.tiny import chat_template
from tiragent.errors import TirAgentError
from tiragent.images import to_uint8

OUR_TEMPLATE_MARK = "You may call one function per turn to restore the image"
"""A line every version of agent/templates/qwen_vl_tools.jinja has."""
DECODING_FILE = "tir_agent_decoding.json"
"""Inside a policy's folder: how it chooses its replies when it is run (``DecodingConfig``), as it was shipped."""


@dataclass(frozen=True)
class DecodingConfig:
    """How a Qwen-VL policy turns its model into a reply."""

    decode: Literal["generate", "rank"] = field(
        default="generate", metadata={"help": "generate: greedy decoding of free text; rank: every valid reply scored by its likelihood, the likeliest taken."}
    )
    gate: float = field(default=0.0, metadata={"help": "With rank: only tasks the detector reads at least this likely are candidates, besides STOP."})
    prior: float = field(default=0.0, metadata={"help": "With rank: add this many times the detector's log-odds of each reply to its score."})
    scale_match: bool = field(
        default=False,
        metadata={"help": "With rank: a model of fixed scale (the server's `scale` fact, e.g. sr.srnet_x2) is a candidate only where its scale is the nearest, among the task's fixed scales, to the downscale factor the detector reads."},
    )

    models: Literal["policy", "default"] = field(
        default="policy",
        metadata={
            "help": "With rank: 'policy' takes the likeliest (task, model) reply; 'default' scores each task by the likelihood of calling it "
            "with any of its models (their probabilities summed) and calls it with the server's default model, so the policy chooses "
            "what to do and when to stop, and the toolbox's best model does it (models added after training are used too)."
        },
    )

    def __post_init__(self) -> None:
        if self.decode not in ("generate", "rank"):
            raise TirAgentError(f"decode must be 'generate' or 'rank', not {self.decode!r}")
        if self.models not in ("policy", "default"):
            raise TirAgentError(f"models must be 'policy' or 'default', not {self.models!r}")
        if (self.reads_detector or self.models != "policy") and self.decode != "rank":
            raise TirAgentError("gate, prior, scale_match and models='default' need decode='rank' (they act on the ranked candidates)")

    @property
    def reads_detector(self) -> bool:
        """Whether choosing among the candidates needs the detector's reading (``gate``, ``prior`` or ``scale_match``)."""
        return bool(self.gate or self.prior or self.scale_match)


def write_decoding(folder: str | Path, decoding: DecodingConfig) -> None:
    (Path(folder) / DECODING_FILE).write_text(json.dumps(asdict(decoding)))


def read_decoding(folder: str | Path) -> DecodingConfig:
    """The decoding saved in ``folder``, or the default (greedy generation)."""
    path = Path(folder) / DECODING_FILE
    return DecodingConfig(**json.loads(path.read_text())) if path.is_file() else DecodingConfig()


TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def parse_reply(text: str, space: ActionSpace) -> Action | Stop:
    """A tool call, or STOP; raises ValueError naming what is wrong with anything else."""
    match = TOOL_CALL.search(text)
    if match is None:
        if "STOP" in text.upper():
            return Stop(reason="policy answered STOP")
        raise ValueError("no <tool_call>...</tool_call> and no STOP in the reply")
    try:
        call = json.loads(match.group(1))
    except json.JSONDecodeError as err:
        raise ValueError(f"the tool call is not valid JSON ({err})") from None
    if not isinstance(call, dict):
        raise ValueError(f"the tool call is a JSON {type(call).__name__}, not an object")
    name, arguments = call.get("name"), call.get("arguments") or {}
    if not isinstance(name, str) or not isinstance(arguments, dict):
        raise ValueError('the tool call needs a string "name" and an object "arguments"')
    arguments = dict(arguments)
    if name not in space.models:
        raise ValueError(f"unknown tool {name!r}; the tools are {', '.join(space.tasks)}")
    model = arguments.pop("model", space.defaults[name])
    arguments.pop("image_id", None)
    if not isinstance(model, str) or model not in space.models[name]:
        raise ValueError(f"tool {name!r} has no model {model!r}; it has {', '.join(space.models[name])}")
    return Action(name, model, arguments)


def by_task(replies: list[Action | Stop], scores: list[float], space: ActionSpace) -> tuple[list[Action | Stop], list[float]]:
    """One reply per task, its model the server's default, scored by the log of the summed probabilities of the task's
    replies (``models='default'``); STOP as it was."""
    import math

    merged: dict[str, list[float]] = {}
    out: list[Action | Stop] = []
    out_scores: list[float] = []
    for reply, score in zip(replies, scores, strict=True):
        if isinstance(reply, Stop):
            out.append(reply)
            out_scores.append(score)
        else:
            merged.setdefault(reply.task, []).append(score)
    for task, parts in merged.items():
        top = max(parts)
        out.append(Action(task, space.defaults[task]))
        out_scores.append(top + math.log(sum(math.exp(p - top) for p in parts)))
    return out, out_scores


def _pil(image: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(to_uint8(image))


@register_policy("qwen")
class QwenVLPolicy:
    name = "qwen"
    default_max_steps = 6

    def __init__(
        self,
        checkpoint: str,
        adapter: str | None = None,
        device: str = "auto",
        views: ViewConfig | None = None,
        max_new_tokens: int = 96,
        retries: int = 1,
        shuffle_tools: int | None = None,
        repeat_tasks: bool = False,
        decode: Literal["generate", "rank"] | None = None,
        gate: float | None = None,
        prior: float | None = None,
        scale_match: bool | None = None,
        models: Literal["policy", "default"] | None = None,
    ) -> None:
        """``shuffle_tools``: a seed; each episode's tool list is then listed in another order (an ablation: a policy
        that read its tools should not depend on their order). ``repeat_tasks``: allow a task that already ran to run
        again; by default such a call ends the episode (training data uses each task at most once, as the search does,
        so a repeat is a policy outside what it learned). ``decode``, ``gate``, ``prior`` (``DecodingConfig``; each not
        given is the checkpoint's own, saved beside it, or else the default): ``generate`` (greedy decoding of free text) or
        ``rank`` (every valid reply, each tool call with each model and STOP, scored by its likelihood, the likeliest
        taken: no malformed call is possible). ``gate`` (with ``rank``): only tasks the detector reads at least this
        likely are candidates, besides STOP. ``prior`` (with ``rank``): each reply's score adds this many times the
        detector's log-odds for it (a call: ``log p`` of its task; STOP: ``log (1 - p)`` summed over the tasks not run),
        a product of the policy and the detector as experts. ``scale_match`` (with ``rank``): a model of fixed scale is
        a candidate only where its scale is the one nearest to the downscale factor the detector reads. ``models``
        (with ``rank``): ``default`` calls each task the policy chooses with the server's default model."""
        options = {"decode": decode, "gate": gate, "prior": prior, "scale_match": scale_match, "models": models}
        given = {k: v for k, v in options.items() if v is not None}
        saved = read_decoding(checkpoint) if Path(checkpoint).is_dir() else DecodingConfig()
        if given.get("decode", saved.decode) != saved.decode:
            saved = DecodingConfig()  # another way of decoding: the saved one's gate and prior do not carry over
        self.decoding = DecodingConfig(**{**asdict(saved), **given})
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.processor = AutoProcessor.from_pretrained(checkpoint)
        template = getattr(self.processor, "chat_template", None) or ""
        ours = chat_template()
        # A template without tool support, or an older version of this project's own (saved with a checkpoint, it
        # would not render what the policy is now trained on): use the current one.
        if "tool_call" not in template or (OUR_TEMPLATE_MARK in template and template != ours):
            self.processor.chat_template = ours
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=dtype)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        self.model = model.to(self.device).eval()
        self.views = views or read_views(checkpoint) or ViewConfig()  # as it was trained, when it says
        self.trained = read_trained_models(checkpoint) if Path(checkpoint).is_dir() else None  # its tools, when it says
        self.max_new_tokens, self.retries, self.repeat_tasks = max_new_tokens, retries, repeat_tasks
        self.found: dict[str, float] = {}
        self.severity: dict[str, float] = {}
        self.shuffle = random.Random(shuffle_tools) if shuffle_tools is not None else None
        self.order: list[int] | None = None
        self.messages: list[dict[str, Any]] = []
        self.actions: list[Action] = []

    @property
    def decode(self) -> str:
        return self.decoding.decode

    @property
    def gate(self) -> float:
        return self.decoding.gate

    @property
    def prior(self) -> float:
        return self.decoding.prior

    def space(self, observation: Observation) -> ActionSpace:
        """The server's tools as far as the policy was trained on them (its ``tir_agent_tools.json``; all of them where
        it has none): a model the server gained since is neither shown to it nor a reply it can give, so its prompt
        stays the one it learned."""
        return observation.space.restricted(self.trained) if self.trained else observation.space

    async def _views(self, observation: Observation, image_id: str, width: int, height: int) -> list[Any]:
        return [_pil(v) for v in await fetch_views(observation.session, image_id, width, height, self.views)]

    async def reset(self, observation: Observation) -> None:
        width, height = observation.original_size
        original = await self._views(observation, observation.original_id, width, height)
        said = ""
        if self.views.perception or self.decoding.reads_detector:
            found = await observation.session.perceive(observation.original_id, self.views.detector or None)
            self.found, self.severity = found["tasks"], found.get("severity", {})
            said = perception_text(found) if self.views.perception else ""
        self.messages = [system_turn(self.views.short_prompt), task_turn(original, said)]
        self.actions, self.seen = [], 0
        if self.shuffle is not None:
            tasks = len(self.space(observation).tasks)
            self.order = self.shuffle.sample(range(tasks), tasks)

    async def _observe(self, observation: Observation) -> None:
        for i, step in enumerate(observation.steps[self.seen :], start=self.seen):
            # the call as the policy made it, not as the server completed it with defaults
            asked = self.actions[i] if i < len(self.actions) else Action(step.task, step.model, step.params)
            self.messages.append(call_turn(step.task, {"model": asked.model, **asked.params}))
            if step.error:
                self.messages.append(error_turn(step.error))
                continue
            shown = await self._views(observation, step.output_id, step.width, step.height)
            self.messages.append(result_turn(result_text(step.task, step.model, step.metrics), shown))
        self.seen = len(observation.steps)

    def generate(self, tools: list[dict[str, Any]]) -> str:
        import torch

        inputs = self.processor.apply_chat_template(
            self.messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        text = self.processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=False)
        return text.split("<|im_end|>")[0]

    def candidates(self, space: ActionSpace) -> list[Action | Stop]:
        """Every reply ``rank`` scores: each task not yet run (and, with ``gate``, read by the detector at least that
        likely) with each of its models, then STOP."""
        done = {a.task for a in self.actions}
        tasks = [t for t in space.tasks if (self.repeat_tasks or t not in done) and self.found.get(t, 0.0) >= self.gate]
        calls = [Action(t, m) for t in tasks for m in space.models[t]]
        if self.decoding.scale_match:
            calls = [a for a in calls if self.scale_fits(a, space)]
        return [*calls, Stop(reason="policy answered STOP")]

    def scale_fits(self, action: Action, space: ActionSpace) -> bool:
        """Whether a call's model has no fixed scale, or the fixed scale of the task's models nearest (in log terms) to
        the downscale factor the detector reads for the task's degradation (True where it reads none)."""
        import math

        from tiragent.tasks import DEGRADATION_OF_TASK

        scale = space.facts[action.task][action.model].scale
        factor = self.severity.get(DEGRADATION_OF_TASK.get(action.task, ""))
        if scale is None or scale == 1 or factor is None:
            return True
        fixed = {f.scale for f in space.facts[action.task].values() if f.scale not in (None, 1)}
        return scale == min(fixed, key=lambda s: abs(math.log(s) - math.log(max(factor, 1e-3))))

    def detector_logodds(self, reply: Action | Stop, space: ActionSpace) -> float:
        """What the detector says of ``reply``: ``log p`` of a call's task, or for STOP ``log (1 - p)`` summed over the
        tasks not yet run (probabilities clipped to [0.01, 0.99])."""
        import math

        p = {t: min(0.99, max(0.01, self.found.get(t, 0.0))) for t in space.tasks}
        if isinstance(reply, Action):
            return math.log(p[reply.task])
        done = {a.task for a in self.actions}
        return sum(math.log(1 - q) for t, q in p.items() if t not in done)

    def score(self, tools: list[dict[str, Any]], replies: list[Action | Stop], chunk: int = 32) -> list[float]:
        """The log-likelihood of each reply (its tokens up to the end of the turn) after the conversation so far,
        exactly as the template renders it in training."""

        template = self.processor.apply_chat_template
        prompt = template(self.messages, tools=tools, add_generation_prompt=True, tokenize=False)
        suffixes = []
        for reply in replies:
            turn = stop_turn() if isinstance(reply, Stop) else call_turn(reply.task, {"model": reply.model})
            text = template([*self.messages, turn], tools=tools, tokenize=False)
            if not text.startswith(prompt):
                raise ValueError("the chat template renders the conversation differently once a reply follows it")
            rest = text[len(prompt) :]
            suffixes.append(rest[: rest.index("<|im_end|>") + len("<|im_end|>")])
        inputs = template(self.messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
        tokenizer = self.processor.tokenizer
        prefix = self._prefix(inputs)
        scores: list[float] = []
        for start in range(0, len(replies), chunk):
            part = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in suffixes[start : start + chunk]]
            scores.extend(self._loglik(prefix, part))
        return scores

    def _prefix(self, inputs: Any) -> tuple[Any, Any, int]:
        """The prompt run once, images and all: its key-value cache, the log-probabilities of the token after it, and
        the text position that token takes (M-RoPE: past the images' positions, not the prompt's length)."""
        import torch

        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        if not hasattr(getattr(base, "model", None), "get_rope_index"):
            raise TirAgentError(f"decode='rank' needs a Qwen-VL model (M-RoPE positions); {type(base).__name__} has none: use decode='generate'")
        with torch.inference_mode():
            out = self.model(**inputs, use_cache=True)
            positions, _ = base.model.get_rope_index(
                inputs["input_ids"],
                mm_token_type_ids=inputs.get("mm_token_type_ids", torch.zeros_like(inputs["input_ids"])),
                image_grid_thw=inputs.get("image_grid_thw"),
                attention_mask=inputs.get("attention_mask"),
            )
        return out.past_key_values, torch.log_softmax(out.logits[0, -1].float(), dim=-1), int(positions.max()) + 1

    def _loglik(self, prefix: tuple[Any, Any, int], suffixes: list[list[int]]) -> list[float]:
        """Each suffix (right-padded, in one batch) continued from the prompt's cache; the sum of its log-probabilities."""
        import copy

        import torch

        cache, first, position = prefix
        n, width = len(suffixes), max(len(s) for s in suffixes)
        pad = self.processor.tokenizer.pad_token_id or 0
        ids = torch.full((n, width), pad, dtype=torch.long, device=self.device)
        for i, s in enumerate(suffixes):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        past = copy.deepcopy(cache)  # the forward appends to it
        past.batch_repeat_interleave(n)
        positions = (position + torch.arange(width, device=self.device)).view(1, 1, -1).expand(3, n, -1)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, past_key_values=past, position_ids=positions, use_cache=True).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        out = []
        for i, s in enumerate(suffixes):
            rest = logprobs[i, torch.arange(len(s) - 1, device=self.device), ids[i, 1 : len(s)]].sum() if len(s) > 1 else 0.0
            out.append(float(first[s[0]] + rest))
        return out

    async def next(self, observation: Observation) -> Action | Stop:
        await self._observe(observation)
        space = self.space(observation)
        tools = tool_schemas(space, short=self.views.short_prompt)
        if self.order is not None:
            tools = [tools[i] for i in self.order]
        if self.decode == "rank":
            replies = self.candidates(space)
            scores = self.score(tools, replies)
            if self.prior:
                scores = [s + self.prior * self.detector_logodds(r, space) for s, r in zip(scores, replies, strict=True)]
            if self.decoding.models == "default":
                replies, scores = by_task(replies, scores, observation.space)  # the server's default, known to the policy or not
            decision = replies[max(range(len(replies)), key=scores.__getitem__)]
            if isinstance(decision, Action):
                self.actions.append(decision)
            return decision
        problem = ""
        for attempt in range(self.retries + 1):
            reply = self.generate(tools)
            try:
                decision = parse_reply(reply, space)
                if isinstance(decision, Action):
                    if not self.repeat_tasks and any(a.task == decision.task for a in self.actions):
                        return Stop(reason=f"policy asked for {decision.task} again; stopped (each task runs once)")
                    self.actions.append(decision)
                return decision
            except ValueError as err:
                problem = str(err)
                if attempt < self.retries:
                    self.messages.append({"role": "assistant", "content": reply})
                    self.messages.append({"role": "user", "content": f"That reply was not usable: {problem}. Answer with one <tool_call> or STOP."})
        return Stop(reason=f"malformed tool call after {self.retries + 1} tries: {problem}")
