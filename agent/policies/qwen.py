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
from typing import Any

import numpy as np

from tiragent.agent.actions import Action, Stop
from tiragent.agent.conversation import (
    ViewConfig,
    call_turn,
    error_turn,
    fetch_views,
    perceived,
    read_views,
    result_text,
    result_turn,
    system_turn,
    task_turn,
    tool_schemas,
)
from tiragent.agent.policy import Observation, register_policy
from tiragent.agent.session import ActionSpace
from tiragent.agent.tiny import chat_template
from tiragent.images import to_uint8

OUR_TEMPLATE_MARK = "You may call one function per turn to restore the image"
"""A line every version of agent/templates/qwen_vl_tools.jinja has."""
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
    ) -> None:
        """``shuffle_tools``: a seed; each episode's tool list is then listed in another order (an ablation: a policy
        that read its tools should not depend on their order). ``repeat_tasks``: allow a task that already ran to run
        again; by default such a call ends the episode (training data uses each task at most once, as the search does,
        so a repeat is a policy outside what it learned)."""
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
        self.max_new_tokens, self.retries, self.repeat_tasks = max_new_tokens, retries, repeat_tasks
        self.shuffle = random.Random(shuffle_tools) if shuffle_tools is not None else None
        self.order: list[int] | None = None
        self.messages: list[dict[str, Any]] = []
        self.actions: list[Action] = []

    async def _views(self, observation: Observation, image_id: str, width: int, height: int) -> list[Any]:
        return [_pil(v) for v in await fetch_views(observation.session, image_id, width, height, self.views)]

    async def reset(self, observation: Observation) -> None:
        width, height = observation.original_size
        original = await self._views(observation, observation.original_id, width, height)
        said = await perceived(observation.session, observation.original_id, self.views)
        self.messages = [system_turn(self.views.short_prompt), task_turn(original, said)]
        self.actions, self.seen = [], 0
        if self.shuffle is not None:
            self.order = self.shuffle.sample(range(len(observation.space.tasks)), len(observation.space.tasks))

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

    async def next(self, observation: Observation) -> Action | Stop:
        await self._observe(observation)
        tools = tool_schemas(observation.space, short=self.views.short_prompt)
        if self.order is not None:
            tools = [tools[i] for i in self.order]
        problem = ""
        for attempt in range(self.retries + 1):
            reply = self.generate(tools)
            try:
                decision = parse_reply(reply, observation.space)
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
