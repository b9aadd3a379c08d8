"""Pretraining a Qwen-VL policy's vision tower on degradation recognition, before SFT.

A from-scratch policy's tower learns perception only from what SFT's next-token loss asks of it, a few thousand
conversations. Degradation labels cost nothing (the degradation code knows them), so the tower can first learn to
name them: each sample is a training photo degraded by the detector's mixture (``train.detector.training_image``:
the randomized model and the protocol, camera-native photos, none to three degradations), shown as the policy sees
it (``agent.conversation.local_views``: the whole view and the native crop); the tower's merged visual tokens,
mean-pooled per view and averaged over the views, feed a linear head that calls each of the eight degradations
present or not (binary cross-entropy). Only the tower (its merger included) and the head train; the language model
is untouched, and the head is dropped. ``OUT`` is a Qwen-VL checkpoint like ``--model``, for
``tir-agent train sft --model OUT``; its card (``tir_agent_vision.json``) gives the head's accuracy on photos held
out of training. Rendering is cached and training checkpointed in ``OUT/pretrain/`` (``--resume``).

    tir-agent train vision --model runs/p/init --data runs/train-photos --out runs/p/init-vision --whole_view 128 --crop_view 128
"""

from __future__ import annotations

import json
import pickle
import platform
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tiragent.agent.conversation import ViewConfig, local_views
from tiragent.errors import ParameterError
from tiragent.eval.calibration import presence_scores
from tiragent.tasks import TASK_OF_DEGRADATION
from tiragent.train.common import recipe_of, render_key, resumable, split_photos, warmup_cosine
from tiragent.train.configs import FIXED_VIEWS_HELP

DEGRADATIONS = list(TASK_OF_DEGRADATION)


@dataclass
class VisionPretrainConfig:
    """Options of ``tir-agent train vision``; each field's help is its command-line help."""

    model: Path = field(metadata={"help": "Qwen-VL checkpoint folder whose vision tower is trained (e.g. from python -m tiragent.agent.tiny)."})
    out: Path = field(metadata={"help": "Output: the same checkpoint with the trained tower (for train sft --model OUT), its card, and pretrain/ (cache, checkpoint)."})
    data: list[Path] = field(default_factory=list, metadata={"help": "Folders of clean training photos (never the evaluation sets)."})
    whole_view: int = field(default=256, metadata={"help": "Longest side of the whole-image view, as the SFT data's (gen-sft --whole_view)."})
    crop_view: int = field(default=128, metadata={"help": "Side of the native-resolution crop beside it, as the SFT data's (0: none)."})
    fixed_views: bool = field(default=False, metadata={"help": FIXED_VIEWS_HELP})
    samples: int = field(default=6000, metadata={"help": "Training samples to render."})
    val_samples: int = field(default=500, metadata={"help": "Validation samples, from photos held out of training."})
    val_fraction: float = field(default=0.1, metadata={"help": "Share of the photos held out for validation."})
    randomized_share: float = field(default=0.7, metadata={"help": "Share of degraded samples made by the randomized model; the rest by the protocol."})
    camera_share: float = field(default=0.15, metadata={"help": "Share of samples that first become camera-native photos (as the detector's training)."})
    small_share: float = field(default=0.5, metadata={"help": "Share of the other samples cropped to 144-320 px first, as the SFT data's 160-px crops are."})
    steps: int = field(default=1500, metadata={"help": "Optimiser steps."})
    batch: int = field(default=32, metadata={"help": "Samples per step."})
    lr: float = field(default=5e-4, metadata={"help": "Peak learning rate (AdamW), after a linear warm-up of 5% of the steps, then cosine decay."})
    workers: int = field(default=2, metadata={"help": "Processes that render samples."})
    seed: int = field(default=0, metadata={"help": "Seed of rendering, the head's initialisation and batches."})
    resume: bool = field(default=False, metadata={"help": "Continue from OUT/pretrain/last.pt."})

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.samples < 1 or self.val_samples < 1:
            raise ParameterError("--steps, --batch, --samples and --val_samples must be at least 1")
        if not 0 < self.val_fraction < 1:
            raise ParameterError(f"--val_fraction must lie in (0, 1), not {self.val_fraction}")

    @property
    def views(self) -> ViewConfig:
        return ViewConfig(whole=self.whole_view, crop=self.crop_view, fixed_size=self.fixed_views)


def render_sample(path: str, seed: int, config: VisionPretrainConfig) -> dict[str, Any]:
    """One photo degraded by the detector's mixture, as the policy's views (8-bit) and its labels."""
    from tiragent.train.detector import training_image  # (imports cv2 and the detector's modules: only in render workers)

    rng = np.random.default_rng(seed)
    image, names, _ = training_image(path, rng, config.randomized_share, config.camera_share, config.small_share)
    return {"views": local_views(image, config.views), "present": np.array([d in names for d in DEGRADATIONS], np.float32)}


RENDER_FIELDS = ("data", "whole_view", "crop_view", "fixed_views", "randomized_share", "camera_share", "small_share", "val_fraction", "seed")
"""The fields a rendered cache depends on; a cache made under others is rendered again."""
SKIP = ("out", "resume")
"""The fields that do not make the tower what it is (where it is written, whether the run resumed)."""


def cached_render(file: Path, paths: list[Path], count: int, seed: int, config: VisionPretrainConfig, desc: str) -> list[dict[str, Any]]:
    key = render_key(recipe_of(config, SKIP), RENDER_FIELDS, count)
    if file.is_file():
        cached = pickle.loads(file.read_bytes())
        if cached.get("key") == key:
            return cached["samples"]
        print(f"{file} was rendered under another recipe: rendering again")
    rng = np.random.default_rng(seed)
    jobs = [(str(paths[int(rng.integers(len(paths)))]), int(rng.integers(2**31))) for _ in range(count)]
    with ProcessPoolExecutor(max_workers=max(1, config.workers)) as pool:
        samples = list(tqdm(pool.map(render_sample, *zip(*jobs), [config] * count, chunksize=16), total=count, desc=desc, unit="sample"))
    file.write_bytes(pickle.dumps({"key": key, "samples": samples}))
    return samples


class TowerProbe:
    """The policy's vision tower and a linear head over its pooled visual tokens."""

    def __init__(self, model: Any, processor: Any, seed: int) -> None:
        import torch

        self.model, self.processor = model, processor
        self.tower = model.model.visual
        torch.manual_seed(seed)
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, len(DEGRADATIONS))

    def parameters(self) -> list[Any]:
        return [*self.tower.parameters(), *self.head.parameters()]

    def logits(self, batch: list[dict[str, Any]]) -> Any:
        import torch

        images = [view for sample in batch for view in sample["views"]]
        owner = torch.tensor([i for i, sample in enumerate(batch) for _ in sample["views"]])
        pixels = self.processor.image_processor(images=images, return_tensors="pt")
        out = self.model.model.get_image_features(pixel_values=pixels["pixel_values"], image_grid_thw=pixels["image_grid_thw"])
        tokens = out.pooler_output if hasattr(out, "pooler_output") else out
        per_view = torch.stack([t.mean(dim=0) for t in tokens])
        pooled = torch.zeros(len(batch), per_view.shape[1]).index_add_(0, owner, per_view)
        pooled = pooled / torch.bincount(owner, minlength=len(batch)).unsqueeze(1)
        return self.head(pooled)


def evaluate(probe: TowerProbe, samples: list[dict[str, Any]], batch: int = 64) -> dict[str, Any]:
    import torch

    with torch.inference_mode():
        logits = torch.cat([probe.logits(samples[i : i + batch]) for i in range(0, len(samples), batch)])
    truth = np.stack([s["present"] for s in samples])
    scores = presence_scores(torch.sigmoid(logits).numpy(), truth, DEGRADATIONS)
    prior = (truth == (truth.mean(axis=0) > 0.5)).all(axis=1).mean()  # the most common answer for every degradation
    return {
        "exact_set": round(scores["exact"], 4),
        "label_prior_exact_set": round(float(prior), 4),
        "accuracy": {d: round(a, 4) for d, a in scores["accuracy"].items()},
        "ece": round(scores["ece"], 4),
    }


def pretrain_vision(config: VisionPretrainConfig) -> dict[str, Any]:
    """Train the tower, write OUT (checkpoint and card); returns the card."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if not (config.model / "config.json").is_file():
        raise ParameterError(f"--model {config.model}: not a checkpoint folder (no config.json)")
    work = config.out / "pretrain"
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    train_photos, val_photos = split_photos(config.data, config.val_fraction)
    train = cached_render(work / "train.pkl", train_photos, config.samples, config.seed, config, "render train")
    val = cached_render(work / "val.pkl", val_photos, config.val_samples, config.seed + 1, config, "render validation")
    processor = AutoProcessor.from_pretrained(str(config.model))
    model = AutoModelForImageTextToText.from_pretrained(str(config.model), dtype=torch.float32)
    probe = TowerProbe(model, processor, config.seed)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=config.lr, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, config.steps)
    step, log = 0, []
    checkpoint, recipe = work / "last.pt", recipe_of(config, SKIP)
    state = resumable(checkpoint, recipe) if config.resume else None
    if state is not None:
        probe.tower.load_state_dict(state["tower"])
        probe.head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step, log, untrained = state["step"], state["log"], state["untrained"]
    else:
        untrained = evaluate(probe, val)  # the head on the random tower, before any step (a resumed run kept its own)
    resumed_at = step
    rng = np.random.default_rng(config.seed + 7)
    for _ in range(step):  # the batches a resumed run already saw
        rng.choice(len(train), size=config.batch)
    probe.tower.train()
    bar = tqdm(total=config.steps, initial=step, desc="vision", unit="step")
    while step < config.steps:
        batch = [train[int(i)] for i in rng.choice(len(train), size=config.batch)]
        loss = F.binary_cross_entropy_with_logits(probe.logits(batch), torch.from_numpy(np.stack([s["present"] for s in batch])))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        bar.update(1)
        if step % 25 == 0:
            log.append({"step": step, "loss": round(float(loss), 4)})
            bar.set_postfix(loss=f"{float(loss):.3f}")
        if step % 200 == 0 or step == config.steps:
            state = {"tower": probe.tower.state_dict(), "head": probe.head.state_dict(), "optimizer": optimizer.state_dict()}
            torch.save({**state, "schedule": schedule.state_dict(), "step": step, "log": log, "recipe": recipe, "untrained": untrained}, checkpoint)
    bar.close()
    probe.tower.eval()
    card = {
        "stage": "vision",
        "model": str(config.model),
        "recipe": recipe,
        "train_photos": len(train_photos),
        "validation_photos": len(val_photos),
        "tower_parameters": sum(p.numel() for p in probe.tower.parameters()),
        "validation_untrained": untrained,
        "validation": evaluate(probe, val),
        "resumed_at_step": resumed_at,
        "minutes": round((time.time() - started) / 60, 1),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "log": log[-1:],
    }
    model.save_pretrained(str(config.out))
    processor.save_pretrained(str(config.out))
    if (config.model / "tir_agent.json").is_file():  # what the model is (tiragent.agent.tiny's record), for the shipped card
        shutil.copy(config.model / "tir_agent.json", config.out / "tir_agent.json")
    (config.out / "tir_agent_vision.json").write_text(json.dumps(card, indent=1))
    return card
