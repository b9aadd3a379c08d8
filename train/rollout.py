"""RL rollouts: one coroutine per episode, token in and token out, every episode's tool calls in flight at once.

An episode is the conversation of ``agent/conversation.py`` played by the policy being trained:
its prompt tokens (system, tools, the photo's views, the generation prompt), then turn by turn the
tokens the policy generated (``tool_mask`` 1) and the tokens of each tool's result and of the next
generation prompt (``tool_mask`` 0, never trained on). The tokens are kept as generated, never
re-rendered from text, so the loss scores exactly what was sampled.

``Generator`` batches the generation requests of all episodes in flight (list in, list out, as the
tool pool batches tool calls): a batch runs when every live episode waits for its next turn or when
the first request has waited ``wait_s``; it runs on a worker thread, so the episodes whose tool calls
are at the server keep going. ``run_groups`` plays G episodes of each sample, all at once (or at most
``concurrency`` at a time, for comparison), over one MCP session.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tiragent.agent.actions import Stop
from tiragent.agent.conversation import (
    ViewConfig,
    fetch_views,
    perceived,
    result_continuation,
    result_text,
    result_turn,
    system_turn,
    task_turn,
)
from tiragent.agent.policies.qwen import parse_reply
from tiragent.agent.policy import NO_REFERENCE_METRICS
from tiragent.agent.session import ActionSpace, ToolCallError, ToolSession
from tiragent.eval.metrics import resized_to
from tiragent.images import to_uint8
from tiragent.train.reward import Outcome
from tiragent.train.samples import Sample, make_pair_in_context


@dataclass
class Episode:
    """One rollout, token in and token out."""

    sample: Sample
    prompt_ids: list[int]
    pixel_values: list[Any]
    """Per image of the episode, in order: the processor's patch rows (prompt images first, then tool results')."""
    grids: list[Any]
    completion_ids: list[int] = field(default_factory=list)
    tool_mask: list[int] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    """``task.model`` of each tool call that ran."""
    replies: list[str] = field(default_factory=list)
    """What the policy said each turn, decoded."""
    invalid: str = ""
    """Why the episode ended on an invalid call ('' when it did not)."""
    stopped: bool = False
    outcome: Outcome | None = None
    seconds: float = 0.0

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.completion_ids

    def extend(self, ids: list[int], generated: bool) -> None:
        self.completion_ids += ids
        self.tool_mask += [int(generated)] * len(ids)


def _pil(image: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(to_uint8(image))


class Generator:
    """Batched sampling from the policy for the episodes in flight."""

    def __init__(self, model: Any, processor: Any, *, max_new_tokens: int = 64, temperature: float = 1.0,
                 sample: bool = True, max_batch: int = 64, wait_s: float = 0.02) -> None:  # fmt: skip
        self.model, self.processor = model, processor
        self.max_new_tokens, self.temperature, self.sample = max_new_tokens, temperature, sample
        self.max_batch, self.wait_s = max_batch, wait_s
        self.eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad = processor.tokenizer.pad_token_id
        self.image_token = model.config.image_token_id
        self.live = 0
        """Episodes in flight: when all of them wait, the batch need not wait for more."""
        self.pending: list[tuple[Episode, asyncio.Future[list[int]]]] = []
        self.arrived = asyncio.Event()
        self.batches: list[int] = []
        """Size of every batch generated, for the logs and the benchmark."""
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, episode: Episode) -> list[int]:
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.pending.append((episode, future))
        self.arrived.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            deadline = loop.time() + self.wait_s
            while len(self.pending) < min(self.max_batch, max(1, self.live)) and loop.time() < deadline:
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
            try:
                outputs = await asyncio.to_thread(self.generate, [e for e, _ in batch])
            except Exception as err:  # noqa: BLE001 - the episodes waiting on this batch get the error
                for _, future in batch:
                    future.set_exception(err)
                continue
            for (_, future), ids in zip(batch, outputs):
                future.set_result(ids)

    def generate(self, episodes: list[Episode]) -> list[list[int]]:
        """One left-padded batch through ``model.generate``; each row's new tokens up to and with its end of turn."""
        import torch

        self.batches.append(len(episodes))
        rows = [e.ids for e in episodes]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row)
            attention[i, width - len(row) :] = 1
        device = self.model.device
        inputs = {
            "input_ids": ids.to(device),
            "attention_mask": attention.to(device),
            "mm_token_type_ids": (ids == self.image_token).long().to(device),
            "pixel_values": torch.cat([p for e in episodes for p in e.pixel_values]).to(device, self.model.dtype),
            "image_grid_thw": torch.cat([g for e in episodes for g in e.grids]).to(device),
        }
        sampling = {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0} if self.sample else {"do_sample": False}
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, eos_token_id=self.eos, pad_token_id=self.pad, **sampling)
        results = []
        for row in out[:, width:].tolist():
            end = row.index(self.eos) + 1 if self.eos in row else len(row)
            results.append(row[:end])
        return results


@dataclass
class RolloutSettings:
    """How episodes are played."""

    views: ViewConfig
    tools: list[dict[str, Any]]
    crop: int = 128
    max_turns: int = 4
    degradations: str = "protocol"
    perception_context: int = 0
    """Side of the larger window of the photo the prompt's detector reading is of (``make_pair_in_context``); 0: the crop."""
    dimensions: tuple[str, ...] = ("psnr", "ssim", "ms_ssim", "niqe")


@dataclass
class Prepared:
    """What the G episodes of one sample share: the images at the server, the prompt, the input's scores."""

    sample: Sample
    degraded: np.ndarray
    clean: np.ndarray
    original_id: str
    reference_id: str
    prompt: dict[str, Any]
    before: dict[str, float]


async def scored_id(session: ToolSession, image_id: str, size: tuple[int, int], clean: np.ndarray) -> str:
    """The image to score against the clean one: itself, or (another size) resized to the clean image's size, as the
    benchmark scores; the degraded input and every result go the same way, so their scores compare."""
    if tuple(size) == (clean.shape[1], clean.shape[0]):
        return image_id
    return await session.load(resized_to(await session.fetch(image_id), clean))


async def prepare(session: ToolSession, processor: Any, sample: Sample, clean_dir: Path, settings: RolloutSettings) -> Prepared:
    degraded, clean, context = make_pair_in_context(sample, clean_dir, settings.crop, settings.degradations, settings.perception_context)
    original_id, reference_id = await session.load(degraded), await session.load(clean)
    h, w = degraded.shape[:2]
    shown = [_pil(v) for v in await fetch_views(session, original_id, w, h, settings.views)]
    said = await perceived(session, await session.load(context) if context is not None else original_id, settings.views)
    messages = [system_turn(settings.views.short_prompt), task_turn(shown, said)]
    prompt = processor.apply_chat_template(
        messages, tools=settings.tools, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    scored = await scored_id(session, original_id, (w, h), clean)
    before = await session.assess(scored, reference_id, list(settings.dimensions))
    return Prepared(sample, degraded, clean, original_id, reference_id, dict(prompt), before)


async def play(session: ToolSession, generate: Generator, processor: Any, space: ActionSpace, prepared: Prepared,
               settings: RolloutSettings) -> Episode:  # fmt: skip
    """One episode: generate, call the tool over MCP, show its result, until STOP, an invalid call or the turn budget."""
    started = time.perf_counter()
    p = prepared.prompt
    episode = Episode(prepared.sample, p["input_ids"][0].tolist(), [p["pixel_values"]], [p["image_grid_thw"]])
    current, size = prepared.original_id, prepared.degraded.shape[1::-1]
    generate.live += 1
    try:
        for turn in range(settings.max_turns):
            new = await generate(episode)
            episode.extend(new, generated=True)
            episode.replies.append(processor.tokenizer.decode(new[:-1] if new and new[-1] == generate.eos else new))
            if not new or new[-1] != generate.eos:
                episode.invalid = f"reply cut off at {generate.max_new_tokens} tokens"
                break
            try:
                decision = parse_reply(episode.replies[-1], space)
            except ValueError as err:
                episode.invalid = str(err)
                break
            if isinstance(decision, Stop):
                episode.stopped = True
                break
            try:
                result = await session.apply(decision, current)
            except ToolCallError as err:
                episode.invalid = f"the server refused the call: {err}"
                break
            episode.steps.append(decision.key)
            current, size = result.image_id, (result.width, result.height)
            if turn == settings.max_turns - 1:  # no turn follows: its result is never shown
                break
            metrics = await session.assess(result.image_id, metrics=NO_REFERENCE_METRICS)
            shown = [_pil(v) for v in await fetch_views(session, result.image_id, result.width, result.height, settings.views)]
            text = result_continuation(processor, settings.tools, result_turn(result_text(decision.task, decision.model, metrics), shown),
                                       short=settings.views.short_prompt)  # fmt: skip
            encoded = processor(text=[text], images=shown, return_tensors="pt")
            episode.extend(encoded["input_ids"][0].tolist(), generated=False)
            episode.pixel_values.append(encoded["pixel_values"])
            episode.grids.append(encoded["image_grid_thw"])
    finally:
        generate.live -= 1
    scored = await scored_id(session, current, size, prepared.clean)
    try:
        after = await session.assess(scored, prepared.reference_id, list(settings.dimensions))
    except ToolCallError as err:  # a result no metric can score (a flat image): the episode fails, the run goes on
        episode.invalid, after = episode.invalid or f"the result cannot be scored: {err}", dict(prepared.before)
    episode.outcome = Outcome(prepared.before, after, tool_calls=len(episode.steps), invalid=bool(episode.invalid))
    episode.seconds = time.perf_counter() - started
    return episode


async def run_groups(session: ToolSession, generate: Generator, processor: Any, samples: list[Sample], group: int, clean_dir: Path,
                     settings: RolloutSettings, concurrency: int | None = None) -> list[Episode]:  # fmt: skip
    """``group`` episodes of every sample, in the order of the samples; all in flight at once unless ``concurrency``."""
    space = await session.action_space()
    slots = asyncio.Semaphore(concurrency or len(samples) * group)

    async def one(prepared: Prepared) -> Episode:
        async with slots:
            return await play(session, generate, processor, space, prepared, settings)

    async def of_sample(sample: Sample) -> list[Episode]:
        # With no limit, the sample's episodes are in flight while it is prepared: the first batch waits for them.
        reserved = group if concurrency is None else 0
        generate.live += reserved
        try:
            async with slots:
                prepared = await prepare(session, processor, sample, clean_dir, settings)
        finally:
            generate.live -= reserved
        return list(await asyncio.gather(*(one(prepared) for _ in range(group))))

    groups = await asyncio.gather(*(of_sample(s) for s in samples))
    return [e for g in groups for e in g]
