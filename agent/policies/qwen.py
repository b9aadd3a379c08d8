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
import re
from typing import Any

import numpy as np

from tiragent.agent.actions import Action, Stop
from tiragent.agent.policy import Observation, register_policy
from tiragent.agent.session import ActionSpace
from tiragent.agent.tiny import chat_template

SYSTEM = (
    "You restore degraded photos one step at a time. Look at the image, call one restoration tool, look at the "
    "result, and go on until the photo is clean; then answer STOP."
)
TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def tool_schemas(space: ActionSpace) -> list[dict[str, Any]]:
    """The task tools as chat-template function schemas; the policy always acts on the current image."""
    schemas = []
    for task in space.tasks:
        params = {k: v for k, v in space.schemas[task].get("properties", {}).items() if k != "image_id"}
        summary = space.descriptions[task].split("\n")[0]
        schemas.append({"type": "function", "function": {"name": task, "description": summary,
                        "parameters": {"type": "object", "properties": params}}})  # fmt: skip
    return schemas


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
    name, arguments = call.get("name"), dict(call.get("arguments") or {})
    if name not in space.models:
        raise ValueError(f"unknown tool {name!r}; the tools are {', '.join(space.tasks)}")
    model = arguments.pop("model", space.defaults[name])
    arguments.pop("image_id", None)
    if model not in space.models[name]:
        raise ValueError(f"tool {name!r} has no model {model!r}; it has {', '.join(space.models[name])}")
    return Action(name, model, arguments)


def _pil(image: np.ndarray, longest: int) -> Any:
    from PIL import Image

    h, w = image.shape[:2]
    scale = min(1.0, longest / max(h, w))
    pil = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    return pil.resize((max(16, round(w * scale)), max(16, round(h * scale)))) if scale < 1 else pil


@register_policy("qwen")
class QwenVLPolicy:
    name = "qwen"
    default_max_steps = 6

    def __init__(
        self,
        checkpoint: str,
        adapter: str | None = None,
        device: str = "auto",
        image_size: int = 448,
        max_new_tokens: int = 96,
        retries: int = 1,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.processor = AutoProcessor.from_pretrained(checkpoint)
        template = getattr(self.processor, "chat_template", None) or ""
        if "tool_call" not in template:
            self.processor.chat_template = chat_template()
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=dtype)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        self.model = model.to(self.device).eval()
        self.image_size, self.max_new_tokens, self.retries = image_size, max_new_tokens, retries
        self.messages: list[dict[str, Any]] = []

    async def reset(self, observation: Observation) -> None:
        original = await observation.session.fetch(observation.original_id, max_side=self.image_size)
        self.messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": [{"type": "image", "image": _pil(original, self.image_size)},
                                         {"type": "text", "text": "Restore this photo."}]},  # fmt: skip
        ]
        self.seen = 0

    async def _observe(self, observation: Observation) -> None:
        for step in observation.steps[self.seen :]:
            call = {"type": "function", "function": {"name": step.task, "arguments": {"model": step.model, **step.params}}}
            self.messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            if step.error:
                self.messages.append({"role": "tool", "content": [{"type": "text", "text": f"error: {step.error}"}]})
                continue
            image = await observation.session.fetch(step.output_id, max_side=self.image_size)
            metrics = ", ".join(f"{k} {v:.2f}" for k, v in step.metrics.items())
            self.messages.append({"role": "tool", "content": [
                {"type": "text", "text": f"{step.key} done in {step.seconds:.2f} s; {metrics}"},
                {"type": "image", "image": _pil(image, self.image_size)}]})  # fmt: skip
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
        tools = tool_schemas(observation.space)
        problem = ""
        for attempt in range(self.retries + 1):
            reply = self.generate(tools)
            try:
                return parse_reply(reply, observation.space)
            except ValueError as err:
                problem = str(err)
                if attempt < self.retries:
                    self.messages.append({"role": "assistant", "content": reply})
                    self.messages.append({"role": "user", "content": f"That reply was not usable: {problem}. Answer with one <tool_call> or STOP."})
        return Stop(reason=f"malformed tool call after {self.retries + 1} tries: {problem}")
