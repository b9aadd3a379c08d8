"""The all-in-one baseline: one network for every degradation, applied in one call (``tir-agent train allinone``).

A reader of an agentic-restoration paper asks whether the agent beats one network trained on the
same data. This trains one: the residual UNet of the largest learned tool (dejpeg's, 1.9 M
parameters), on the same mixture the policy trains on (the 16 combinations, single degradations
and clean crops, drawn as ``train.samples.plan`` draws them, from the randomized degradation model),
on the training photos. Low-resolution inputs are bicubic-upscaled to the clean size first, as the
benchmark scores them, so the network maps a same-size image to its clean version.
``benchmarks/agents.py --allinone WEIGHTS`` puts it in the agents' table (one tool call per image).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tiragent.errors import ParameterError
from tiragent.eval.degradations import degrade
from tiragent.eval.metrics import resized_to
from tiragent.images import list_images
from tiragent.server.nets import build_net, count_parameters, load_net, save_net
from tiragent.train.configs import AllInOneConfig
from tiragent.train.samples import plan
from tiragent.train.tool_trainer import load_folder, restore

CONFIG = {"width": 64, "blocks": [2, 2, 2], "unshuffle": 2}
"""dejpeg's UNet, the largest learned tool: the same parameter budget."""


def pair(images: list[np.ndarray], names: list[str], sample: Any, patch: int, model: str) -> tuple[np.ndarray, np.ndarray]:
    clean = images[names.index(sample.source)]
    rng = np.random.default_rng(sample.seed)
    h, w = clean.shape[:2]
    top, left = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
    crop = np.ascontiguousarray(clean[top : top + patch, left : left + patch])
    if rng.random() < 0.5:
        crop = np.ascontiguousarray(crop[:, ::-1])
    degraded = degrade(crop, list(sample.combination), seed=sample.seed, model=model)[0] if sample.combination else crop
    return resized_to(degraded, crop), crop


def apply(net: torch.nn.Module, image: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The network's restoration of ``image`` at the size of ``target`` (a smaller input is upscaled first, as the benchmark scores it)."""
    return restore(net, resized_to(image, target).astype(np.float32))


def train_allinone(config: AllInOneConfig) -> dict[str, Any]:
    if config.steps is None and config.minutes <= 0:
        raise ParameterError("give --minutes or --steps")
    sources = list_images(config.data)
    images = load_folder(Path(config.data))
    names = [p.name for p in sources]
    small = [n for n, im in zip(names, images) if min(im.shape[:2]) < config.patch]
    if small:
        raise ParameterError(f"{len(small)} photos are smaller than --patch {config.patch} (e.g. {small[0]})")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    net = load_net(config.init) if config.init and not config.resume else build_net("resunet", **CONFIG)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr)
    step, total, elapsed = 0, config.steps, 0.0
    checkpoint = out / "last.pt"
    if config.resume and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        step, total, elapsed = state["step"], config.steps or state["total"], state["elapsed"]
    draws = plan(10**5, sources, seed=config.seed, single_ratio=config.single_ratio, clean_ratio=config.clean_ratio)
    net.train()
    bar = tqdm(total=total, initial=step, desc="allinone", unit="step")
    started, last_save, loss_ema = time.monotonic(), time.monotonic(), None

    def save() -> None:
        state = {"net": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "total": total, "elapsed": elapsed + time.monotonic() - started}
        torch.save(state, checkpoint.with_suffix(".tmp"))
        checkpoint.with_suffix(".tmp").replace(checkpoint)

    while total is None or step < total:
        if total is None and step == 30:
            per_step = (time.monotonic() - started) / 30
            total = max(31, int(config.minutes * 60 / per_step))
            bar.reset(total=total)
            bar.update(step)
        batch = [pair(images, names, draws[(step * config.batch_size + i) % len(draws)], config.patch, config.degradations) for i in range(config.batch_size)]
        x = torch.from_numpy(np.stack([b[0] for b in batch])).permute(0, 3, 1, 2).float()
        y = torch.from_numpy(np.stack([b[1] for b in batch])).permute(0, 3, 1, 2).float()
        lr = config.lr * 0.5 * (1 + np.cos(np.pi * step / total)) if total else config.lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = F.l1_loss(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_ema:.4f}")
        if time.monotonic() - last_save > 60:
            save()
            last_save = time.monotonic()
    bar.close()
    save()
    card = {"tool": "allinone", "description": "All-in-one baseline: one residual UNet for every degradation (train/allinone.py).", "arch": "resunet",
            "parameters": count_parameters(net), "data": Path(config.data).name, "train_images": len(images), "steps": step,
            "seconds": round(elapsed + time.monotonic() - started, 1), "device": "cpu", "final_loss_ema": loss_ema,
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}}  # fmt: skip
    save_net(net, out / "allinone.safetensors", card)
    (out / "card.json").write_text(json.dumps(card, indent=2))
    return card
