"""GRPO of the Qwen-VL policy over MCP tool calls: ``tir-agent train rl``.

trl's ``GRPOTrainer`` keeps the loss (its clipped surrogate, with the KL term to the initial
policy when ``--kl`` > 0), the optimiser, the schedule, checkpoints, resume and logging.
``MCPGRPOTrainer`` replaces only how a generation batch is made, because trl's tool loop runs one
sample's tools at a time and its ``rollout_func`` drops tool images:

- the B x G episodes of a step are played at once (``train/rollout.py``): generation is batched
  across them and their tool calls reach the server together, where the shared pool batches them;
- each episode is scored by the adaptive reward (``train/reward.py``) within its group, and its
  advantage is that reward normalised within the group (GRPO);
- the tokens of tool results are masked out of the loss (``tool_mask``); an invalid tool call
  ends the episode with the format penalty and is counted.

Every step's figures go to ``OUT/log.jsonl`` (and ``tir-agent train plot OUT`` draws them).
"""

from __future__ import annotations

import asyncio
import json
import platform
import threading
import time
from collections.abc import Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from tiragent.agent.conversation import ViewConfig, read_trained_models, read_views, tool_schemas, write_trained_tools, write_views
from tiragent.agent.session import ToolSession, open_session
from tiragent.errors import ParameterError, TirAgentError
from tiragent.images import list_images
from tiragent.train.configs import RLRunConfig
from tiragent.train.diversity import diversity
from tiragent.train.reward import AdaptiveReward, Outcome, RewardConfig
from tiragent.train.rollout import Episode, Generator, RolloutSettings, run_groups
from tiragent.train.samples import Sample, plan

T = TypeVar("T")
LOG = "log.jsonl"
EPISODES = "episodes.jsonl"
REWARD_STATE = "tir_agent_reward.json"


class SessionThread:
    """An event loop on its own thread holding one MCP session for the whole run; the trainer submits coroutines."""

    def __init__(self, server: str | None, device: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.session: ToolSession | None = None
        self._ready, self._error = threading.Event(), None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(server, device),), daemon=True)
        self.thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    async def _main(self, server: str | None, device: str) -> None:
        self._stop = asyncio.Event()
        try:
            async with open_session(server, device=device) as session:
                self.session = session
                self._ready.set()
                await self._stop.wait()
        except Exception as err:  # noqa: BLE001 - handed to the thread that waits
            self._error = err
            self._ready.set()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        if self._stop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(timeout=30)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def episode_figures(episodes: list[Episode], group: int, reward: AdaptiveReward) -> dict[str, float]:
    """Per step: tool calls per episode, invalid and stop rates, each dimension's mean improvement, diversity per group."""
    figures = {
        "episodes/tool_calls": _mean([len(e.steps) for e in episodes]),
        "episodes/invalid_rate": _mean([float(bool(e.invalid)) for e in episodes]),
        "episodes/stop_rate": _mean([float(e.stopped) for e in episodes]),
        "episodes/seconds": _mean([e.seconds for e in episodes]),
    }
    dimensions = reward.config.dimensions
    gains = [reward.improvements(e.outcome) for e in episodes if e.outcome]  # the reward's own per-dimension improvements
    for i, name in enumerate(dimensions):
        figures[f"improvement/{name}"] = _mean([g[i] for g in gains])
    if "psnr" in dimensions:
        figures["improvement/psnr_db"] = _mean([e.outcome.after["psnr"] - e.outcome.before["psnr"] for e in episodes if e.outcome])
    groups = [episodes[i : i + group] for i in range(0, len(episodes), group)]
    spreads = [diversity(tuple(e.steps) for e in g) for g in groups]
    for key in ("distinct", "order", "tools"):
        figures[f"diversity/{key}"] = _mean([s[key] for s in spreads])
    return figures


def adaptive_reward(reward: AdaptiveReward, group: int) -> Any:
    """The adaptive reward as a trl reward function: each consecutive ``group`` of rows are the rollouts of one image."""

    def adaptive(prompts: list[Any], completions: list[Any], outcome: list[Outcome], **_: Any) -> list[float]:
        return [r for i in range(0, len(outcome), group) for r in reward.score_group(outcome[i : i + group])]

    return adaptive


def _trainer_class() -> type:
    """The trainer, built on first use so that importing this module does not import trl."""
    import torch
    from trl import GRPOTrainer
    from trl.trainer.utils import pad

    class MCPGRPOTrainer(GRPOTrainer):
        def __init__(self, *args: Any, run: RLRunConfig, reward: AdaptiveReward, session: SessionThread, settings: RolloutSettings,
                     held_out: list[Sample], **kwargs: Any) -> None:  # fmt: skip
            super().__init__(*args, **kwargs)
            self.rl, self.reward, self.session, self.settings, self.held_out = run, reward, session, settings, held_out
            model = self.accelerator.unwrap_model(self.model)
            common = {"max_new_tokens": run.max_new_tokens, "max_batch": run.batch * run.group}
            self.sampler = Generator(model, self.processing_class, temperature=run.temperature, **common)
            self.greedy = Generator(model, self.processing_class, sample=False, **common)

        def _play(self, samples: list[Sample], group: int, generator: Generator, clean: Path) -> list[Episode]:
            coroutine = run_groups(self.session.session, generator, self.processing_class, samples, group, clean, self.settings,
                                   concurrency=self.rl.concurrency or None)  # fmt: skip
            return self.session.run(coroutine)

        def _evaluate_held_out(self) -> dict[str, float]:
            episodes = self._play(self.held_out, 1, self.greedy, self.rl.eval_clean)
            figures = episode_figures(episodes, 1, self.reward)
            return {f"eval/{k.split('/', 1)[1]}": v for k, v in figures.items() if not k.startswith("diversity/")}

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            device = self.accelerator.device
            g = self.num_generations
            if any(inputs[i]["index"] != inputs[i - i % g]["index"] for i in range(len(inputs))):
                raise RuntimeError("trl's sampler did not keep each image's rollouts together")
            samples = [Sample(r["index"], r["source"], tuple(r["combination"]), r["seed"]) for r in inputs[::g]]
            step = self.state.global_step
            metrics = self._metrics["train"]
            if self.held_out and self.rl.eval_steps and step % self.rl.eval_steps == 0:
                for k, v in self._evaluate_held_out().items():
                    metrics[k].append(v)
            started = time.perf_counter()
            episodes = self._play(samples, g, self.sampler, self.rl.clean)
            rollout_seconds = time.perf_counter() - started

            outcomes = [e.outcome for e in episodes]
            # trl's reward machinery (the adaptive reward is its one reward function), gathered over processes
            completions = self._tokenizer.batch_decode([e.completion_ids for e in episodes], skip_special_tokens=False)
            scored = self._calculate_rewards([{"outcome": o} for o in outcomes], [f"{e.sample.index}" for e in episodes], completions,
                                             [e.completion_ids for e in episodes])[:, 0]  # fmt: skip
            r = scored.view(-1, g)
            advantages = ((r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, unbiased=False, keepdim=True) + 1e-4)).view(-1)
            local = slice(self.accelerator.process_index * len(episodes), (self.accelerator.process_index + 1) * len(episodes))
            advantages, rewards = advantages[local], scored[local].tolist()
            tensor = lambda rows: [torch.tensor(x, dtype=torch.long) for x in rows]  # noqa: E731
            prompt_ids = pad(tensor([e.prompt_ids for e in episodes]), padding_value=self._tokenizer.pad_token_id, padding_side="left").to(device)
            prompt_mask = pad(tensor([[1] * len(e.prompt_ids) for e in episodes]), padding_value=0, padding_side="left").to(device)
            completion_ids = pad(tensor([e.completion_ids for e in episodes]), padding_value=self._tokenizer.pad_token_id, padding_side="right").to(device)
            completion_mask = pad(tensor([[1] * len(e.completion_ids) for e in episodes]), padding_value=0, padding_side="right").to(device)
            tool_mask = pad(tensor([e.tool_mask for e in episodes]), padding_value=0, padding_side="right").to(device)
            all_ids = torch.cat([prompt_ids, completion_ids], dim=1)
            images = {
                "pixel_values": torch.cat([p for e in episodes for p in e.pixel_values]).to(device),
                "image_grid_thw": torch.cat([x for e in episodes for x in e.grids]).to(device),
                "mm_token_type_ids": (all_ids == self.sampler.image_token).long(),
            }
            num_images = [sum(int(x.shape[0]) for x in e.grids) for e in episodes]  # a turn may show several images (whole view and crop)
            attention = torch.cat([prompt_mask, completion_mask], dim=1)
            keep = completion_ids.size(1)
            output: dict[str, Any] = {
                "prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids, "completion_mask": completion_mask,
                "tool_mask": tool_mask, "advantages": advantages.to(device), "num_images": num_images, **images,
                "num_items_in_batch": self.accelerator.gather((completion_mask * tool_mask).sum()).sum(),
            }  # fmt: skip
            with torch.no_grad():
                if self.args.gradient_accumulation_steps % (self.args.steps_per_generation * self.num_iterations) != 0:
                    output["old_per_token_logps"] = self._get_per_token_logps_and_entropies(
                        self.model, all_ids, attention, keep, batch_size=g, num_images=num_images, **images
                    )[0]
                if self.beta != 0.0:
                    reference = self.ref_model
                    if reference is None:  # a LoRA run: the initial policy is the base model with the adapter off
                        with self.accelerator.unwrap_model(self.model).disable_adapter():
                            logps = self._get_per_token_logps_and_entropies(self.model, all_ids, attention, keep, batch_size=g,
                                                                            num_images=num_images, **images)[0]  # fmt: skip
                    else:
                        logps = self._get_per_token_logps_and_entropies(reference, all_ids, attention, keep, batch_size=g,
                                                                        num_images=num_images, **images)[0]  # fmt: skip
                    output["ref_per_token_logps"] = logps

            self.reward.update(outcomes)
            metrics["reward"].append(_mean(rewards))
            metrics["reward_std"].append(float(r.std(dim=1, unbiased=False).mean()))
            metrics["rollout/seconds"].append(rollout_seconds)
            metrics["rollout/episodes_per_second"].append(len(episodes) / rollout_seconds)
            metrics["rollout/mean_generation_batch"].append(_mean(self.sampler.batches[-64:]))
            for k, v in episode_figures(episodes, g, self.reward).items():
                metrics[k].append(v)
            state = self.reward.log()
            for name in self.reward.config.dimensions:
                metrics[f"weights/{name}"].append(state["weights"][name])
                metrics[f"trends/{name}"].append(state["trends"][name])
            with (Path(self.args.output_dir) / EPISODES).open("a") as f:
                for e, reward in zip(episodes, rewards):
                    f.write(json.dumps({"step": step + 1, "image": e.sample.index, "combination": list(e.sample.combination), "steps": e.steps,
                                        "stopped": e.stopped, "invalid": e.invalid, "reward": round(reward, 4), "replies": e.replies,
                                        "before": e.outcome.before, "after": e.outcome.after}) + "\n")  # fmt: skip
            return output

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            super()._save_checkpoint(model, trial)
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            if folder.is_dir():
                (folder / REWARD_STATE).write_text(json.dumps(self.reward.state_dict()))

    return MCPGRPOTrainer


def _log_callback(path: Path) -> Any:
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """Every log of the trainer, one JSON line per step, appended (a resumed run continues the file)."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if logs:
                with path.open("a") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return JsonlLog()


def _trim_log(path: Path, step: int) -> None:
    """On resume: forget the lines written after the checkpoint (their steps are trained again)."""
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        lines = [json.dumps(r) for r in rows if r.get("step", 0) <= step and "train_runtime" not in r]
        path.write_text("".join(line + "\n" for line in lines))


def train_rl(config: RLRunConfig, reward_config: RewardConfig | None = None) -> Path:
    """Train, save the final policy and its card in ``config.out``, and return that folder."""
    import torch
    from datasets import Dataset
    from transformers import AutoProcessor
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig

    from tiragent.agent.tiny import chat_template
    from tiragent.eval.metrics import get_metric_info

    reward = AdaptiveReward(reward_config)
    for name in reward.config.dimensions:
        if get_metric_info(name).min_side > config.crop:
            raise ParameterError(f"the reward dimension {name} needs images of at least {get_metric_info(name).min_side} px a side; --crop is {config.crop}")
    sources = list_images(config.clean)
    if not sources:
        raise TirAgentError(f"{config.clean}: no images")
    held_out_sources = list_images(config.eval_clean) if config.eval_clean else []
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    views = read_views(config.init) or ViewConfig()
    if config.perception_context and not views.perception:
        raise TirAgentError(f"--perception_context: the policy {config.init} reads no detector (its views have perception off)")
    processor = AutoProcessor.from_pretrained(config.init)
    processor.chat_template = chat_template()  # the policy acts with this template
    processor.tokenizer.padding_side = "left"
    found = get_last_checkpoint(str(out)) if config.resume else None  # transformers' own finder of checkpoint-N folders
    checkpoint = Path(found) if found else None
    if checkpoint is not None and (checkpoint / REWARD_STATE).is_file():
        reward.load_state_dict(json.loads((checkpoint / REWARD_STATE).read_text()))
    for log in (out / LOG, out / EPISODES):
        if checkpoint is None:
            log.unlink(missing_ok=True)
        else:
            _trim_log(log, int(checkpoint.name.split("-")[1]))
    samples = plan(config.images, sources, seed=config.seed, single_ratio=config.single_ratio, clean_ratio=config.clean_ratio, camera_ratio=config.camera_ratio)
    held_out = plan(config.eval_images, held_out_sources, seed=config.seed + 1, single_ratio=0.25, clean_ratio=0.1) if held_out_sources else []
    rows = [{"index": s.index, "source": s.source, "combination": list(s.combination), "seed": s.seed} for s in samples]
    args = GRPOConfig(
        output_dir=str(out),
        max_steps=config.steps,
        per_device_train_batch_size=config.group,
        gradient_accumulation_steps=config.batch,
        steps_per_generation=config.batch,
        num_generations=config.group,
        learning_rate=config.lr,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(10, max(1, config.steps // 10)),
        beta=config.kl,
        temperature=config.temperature,
        save_steps=config.save_steps,
        logging_steps=1,
        seed=config.seed,
        report_to=[],
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        disable_tqdm=False,
    )
    started = time.perf_counter()
    session = SessionThread(config.server, config.device)
    try:
        space = session.run(session.session.action_space())
        trained = read_trained_models(config.init)
        if trained:  # the tools the SFT policy learned, as far as the server has them (not a model it gained since)
            space = space.restricted(trained)
        settings = RolloutSettings(views=views, tools=tool_schemas(space, short=views.short_prompt), crop=config.crop,
                                   max_turns=config.max_turns, degradations=config.degradations, perception_context=config.perception_context, dimensions=tuple(reward.config.dimensions))  # fmt: skip
        trainer = _trainer_class()(
            model=config.init, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor, reward_funcs=[adaptive_reward(reward, config.group)],
            callbacks=[_log_callback(out / LOG)], run=config, reward=reward, session=session, settings=settings, held_out=held_out,
        )  # fmt: skip
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        final_eval = trainer._evaluate_held_out() if held_out else {}
    finally:
        session.close()
    trainer.save_model(str(out))
    processor.save_pretrained(str(out))
    write_views(out, views)
    write_trained_tools(out, settings.tools)
    history = [e for e in trainer.state.log_history if "loss" in e]
    card = {
        "recipe": {k: str(v) for k, v in asdict(config).items()},
        "reward": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(reward.config).items()},
        "steps": trainer.state.global_step,
        "episodes": trainer.state.global_step * config.batch * config.group,
        "minutes": round((time.perf_counter() - started) / 60, 2),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", CPU"),
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
        "last_reward": history[-1].get("reward") if history else None,
        "reward_state": reward.log(),
        "final_eval": final_eval,
    }  # fmt: skip
    (out / "tir_agent_rl.json").write_text(json.dumps(card, indent=2))
    return out
