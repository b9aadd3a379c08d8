"""Training the project's own restoration networks on clean images and synthetic degradations.

Every batch is a pure function of ``(seed, step)``: crops of the clean images, degraded by
the task's own degradation from ``tiragent.eval.degradations`` (the protocol's ranges, or a
recipe's wider ones). That makes a run reproducible from its seed and a resumed run identical
to an uninterrupted one. ``--minutes`` fixes the number of steps from the speed of the first
steps; the weights file records it so that ``--steps`` reproduces the run.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tiragent.errors import ParameterError
from tiragent.eval.degradations import DEGRADATIONS, Params, degradation_fn
from tiragent.eval.randomized import camera_native
from tiragent.images import list_images, read_image
from tiragent.server.nets import ARCHITECTURES, build_net, count_parameters, load_net, net_arch, save_net
from tiragent.train.tool_recipes import Recipe, ToolTrainConfig, get_recipe, with_config


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


class PairSampler:
    """Degraded/clean crop pairs; ``batch(step)`` depends only on the seed and the step."""

    MARGIN = 16  # degraded with context around the crop, so blur and haze see real neighbours

    def __init__(
        self,
        images: list[np.ndarray],
        recipe: Recipe,
        patch: int,
        seed: int,
        degradations: str = "protocol",
        protocol_share: float = 0.0,
        identity_share: float = 0.0,
    ) -> None:
        """``protocol_share``: with another degradation model, the share of pairs the protocol's own degradation makes.
        ``identity_share``: the share of pairs that are a clean camera-native crop and itself (``identity``)."""
        self.images, self.recipe, self.seed, self.identity_share = images, recipe, seed, identity_share
        self.fn = degradation_fn(recipe.degradation, degradations)
        # the protocol's own samplers know the protocol's parameters; the randomized model draws its own (fixed ones stay)
        self.params = recipe.params if degradations == "protocol" else (lambda rng: dict(recipe.fixed))
        self.protocol_share = 0.0 if degradations == "protocol" else protocol_share
        self.protocol_fn = degradation_fn(recipe.degradation, "protocol")
        scale = recipe.scale
        self.patch = patch - patch % (scale * 8)
        if self.patch <= 0:
            raise ParameterError(f"patch size {patch} is too small for scale {scale}")
        small = [img.shape[:2] for img in images if min(img.shape[:2]) < self.patch + 2 * self.MARGIN]
        if small:
            raise ParameterError(f"training images must be at least {self.patch + 2 * self.MARGIN} px on each side; got {small[0]}")

    def pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Params]:
        """A degraded crop, its clean crop, and the degradation's parameters."""
        image = self.images[int(rng.integers(len(self.images)))]
        if self.identity_share and rng.random() < self.identity_share:  # no draw at share 0: earlier runs' batches stay
            return self.identity(image, rng)
        if self.recipe.whole_frames:
            return self.frame(image, rng)
        m, p, s = self.MARGIN, self.patch, self.recipe.scale
        h, w = image.shape[:2]
        y, x = int(rng.integers(0, h - p - 2 * m + 1)), int(rng.integers(0, w - p - 2 * m + 1))
        flip = rng.random() < 0.5
        if self.recipe.whole_image:
            image, degraded, params = self._degrade(image, rng)
            a, b = (np.ascontiguousarray(a[y + m : y + m + p, x + m : x + m + p][:, ::-1 if flip else 1]) for a in (degraded, image))
            return a, b, params
        crop = image[y : y + p + 2 * m, x : x + p + 2 * m]
        crop, degraded, params = self._degrade(np.ascontiguousarray(crop[:, ::-1] if flip else crop), rng)
        return degraded[m // s : (m + p) // s, m // s : (m + p) // s], crop[m : m + p, m : m + p], params

    def identity(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Params]:
        """A crop of the photo as a camera's own pixels show it (smooth at pixel scale, not degraded), paired with itself."""
        photo, params = camera_native(image, rng)
        p = self.patch
        if min(photo.shape[:2]) < p:
            photo = cv2.resize(photo, (max(p, photo.shape[1]), max(p, photo.shape[0])), interpolation=cv2.INTER_CUBIC)
        y, x = int(rng.integers(0, photo.shape[0] - p + 1)), int(rng.integers(0, photo.shape[1] - p + 1))
        crop = np.ascontiguousarray(photo[y : y + p, x : x + p])
        return crop, crop.copy(), {"identity": True, **params}

    def frame(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Params]:
        """A whole-frame pair: a view of 60-100% of the shorter side (aspect 0.8-1.25), resized and degraded as a photo of its own."""
        h, w = image.shape[:2]
        side = min(h, w) * rng.uniform(0.6, 1.0)
        ch, cw = (min(n, int(side * a)) for n, a in ((h, 1.0), (w, rng.uniform(0.8, 1.25))))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        f = self.patch
        view = cv2.resize(image[y : y + ch, x : x + cw], (f, f), interpolation=cv2.INTER_AREA)
        clean, degraded, params = self._degrade(np.ascontiguousarray(view[:, ::-1] if rng.random() < 0.5 else view), rng)
        return degraded, clean, params

    def _degrade(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Params]:
        """The recipe's augmentation of the clean image (if any), then its degradation: (clean, degraded, parameters)."""
        if self.recipe.augment is not None:
            clean = self.recipe.augment(clean, rng)
        if self.protocol_share and rng.random() < self.protocol_share:  # no draw at share 0: earlier runs' batches stay
            degraded, params = self.protocol_fn(clean, rng, **self.recipe.params(rng))
        else:
            degraded, params = self.fn(clean, rng, **self.params(rng))
        return clean, degraded, params

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor, list[Params]]:
        rng = np.random.default_rng([self.seed, step])
        pairs = [self.pair(rng) for _ in range(size)]
        to_tensor = lambda arrays: torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return to_tensor([p[0] for p in pairs]), to_tensor([p[1] for p in pairs]), [p[2] for p in pairs]


Batch = tuple[torch.Tensor, torch.Tensor, list[Params]]


class _StepBatches(torch.utils.data.Dataset):
    """Item ``step`` is the sampler's batch for that step, so worker processes make exactly the batches the training loop would."""

    def __init__(self, sampler: PairSampler, size: int) -> None:
        self.sampler, self.size = sampler, size

    def __getitem__(self, step: int) -> Batch:
        return self.sampler.batch(step, self.size)


def _as_is(batch: Batch) -> Batch:
    return batch


def _single_threaded_worker(_: int) -> None:
    cv2.setNumThreads(1)  # one OpenCV thread per worker process; they run side by side


def batch_stream(sampler: PairSampler, start: int, size: int, workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
    """The batches of steps ``start, start + 1, ...``: made in the calling process, or ahead of time by ``workers`` processes."""
    if workers <= 0:
        return (sampler.batch(step, size) for step in itertools.count(start))
    loader = torch.utils.data.DataLoader(
        _StepBatches(sampler, size),
        batch_size=None,
        sampler=itertools.count(start),  # type: ignore[arg-type]
        num_workers=workers,
        collate_fn=_as_is,
        prefetch_factor=4,
        pin_memory=pin_memory,
        worker_init_fn=_single_threaded_worker,
        # Forked workers can inherit a lock that another thread held at the fork and hang; a fork server starts them clean.
        multiprocessing_context="forkserver",
    )
    return iter(loader)


def degrade_for_eval(image: np.ndarray, recipe: Recipe, seed: int) -> np.ndarray:
    """One fixed degradation of a whole image (the protocol's ranges, the recipe's fixed parameters)."""
    degraded, _ = DEGRADATIONS[recipe.degradation].fn(image, np.random.default_rng(seed), **recipe.fixed)
    return degraded


@torch.no_grad()
def restore(net: torch.nn.Module, image: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Run a network on one whole image (reflect-padded to its multiple)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)
    h, w = x.shape[-2:]
    k = net.config.multiple_of
    x = F.pad(x, (0, (-w) % k, 0, (-h) % k), mode="reflect") if (h % k or w % k) else x
    s = net.config.scale
    y = net(x)[..., : h * s, : w * s].clamp(0, 1)
    return y[0].permute(1, 2, 0).float().cpu().numpy()


def baseline(image: np.ndarray, recipe: Recipe, target_shape: tuple[int, ...]) -> np.ndarray:
    """The input as a restoration: itself, or its bicubic upscale for super-resolution."""
    if recipe.scale == 1:
        return image
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    return F.interpolate(x, size=target_shape[:2], mode="bicubic", align_corners=False).clamp(0, 1)[0].permute(1, 2, 0).numpy()


def evaluate_net(net: torch.nn.Module, images: list[np.ndarray], recipe: Recipe, device: str = "cpu", seed: int = 0) -> dict[str, float]:
    """Mean PSNR of the degraded inputs and of the network's outputs over whole images."""
    was_training = net.training
    net.eval()
    psnr_in, psnr_out = [], []
    for i, clean in enumerate(images):
        s = recipe.scale
        clean = clean[: clean.shape[0] // s * s, : clean.shape[1] // s * s]
        degraded = degrade_for_eval(clean, recipe, seed + i)
        psnr_in.append(psnr(baseline(degraded, recipe, clean.shape), clean))
        psnr_out.append(psnr(restore(net, degraded, device), clean))
    net.train(was_training)
    return {"psnr_in": round(float(np.mean(psnr_in)), 3), "psnr_out": round(float(np.mean(psnr_out)), 3), "images": len(images)}


def training_loss(net: torch.nn.Module, degraded: torch.Tensor, clean: torch.Tensor, params: list[Params]) -> torch.Tensor:
    """L1 of the restoration, unless the network trains on another objective (``net.training_loss``)."""
    if hasattr(net, "training_loss"):
        return net.training_loss(degraded, clean, params).float()
    return F.l1_loss(net(degraded).float(), clean)


def _lr_at(step: int, schedule: list[int], peak: float) -> float:
    """Warm-up then cosine to 1% over the first length; each extension (``--resume --steps``)
    restarts a cosine from half the peak over its own steps."""
    start = max([0, *(b for b in schedule if b <= step)])
    end = next((b for b in schedule if b > step), schedule[-1] if schedule else 10**9)
    if start > 0:
        return 0.5 * peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - start) / max(1, end - start)))))
    warmup = min(200, max(1, end // 20))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, end - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def start_from(net: torch.nn.Module, path: Path) -> None:
    """Load a weights file's parameters into ``net`` (``--init``); raises ParameterError if its network differs."""
    given = load_net(path)
    if net_arch(given) != net_arch(net) or given.config != net.config:
        raise ParameterError(f"--init: {path} holds a {net_arch(given)} {given.config}, not the {net_arch(net)} {net.config} this run trains (see --net-config)")
    net.load_state_dict(given.state_dict())


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError("--device cuda was asked for, but torch sees no CUDA device")
    return device


def provenance(config: ToolTrainConfig) -> str:
    """What the card's description adds about how these weights were trained (the tool's MCP description shows it)."""
    said = ""
    if config.degradations == "randomized":
        said = " Trained on the randomized degradation model (each step draws its implementation as well as its strength)"
        said += f", {config.protocol_share:.0%} of its pairs from the benchmark protocol's own degradation." if config.protocol_share else "."
    if config.identity_share:
        said += f" {config.identity_share:.0%} of its pairs are sharp camera-native photos paired with themselves, to leave undegraded photos alone."
    if config.init is not None:
        said += f" Fine-tuned from {Path(config.init).name}."
    return said


def data_name(folder: Path) -> str:
    """The training folder as a card names it: where its files link to, the sources' folders (a folder of links to
    CBSD432 and CSun_Hays80_half reads 'CBSD432 + CSun_Hays80_half (511 photos)'), else its own name."""
    files = list_images(folder)
    sources = sorted({f.resolve().parent.name for f in files if f.is_symlink()})
    return f"{' + '.join(sources)} ({len(files)} photos)" if sources else folder.name


def load_folder(folder: Path) -> list[np.ndarray]:
    paths = list_images(folder)
    if not paths:
        raise ParameterError(f"{folder} holds no images")
    return [read_image(p) for p in paths]


def train_tool(config: ToolTrainConfig, progress: bool = True, stop_at: int | None = None) -> dict[str, Any] | None:
    """Train one recipe; returns the card written into the weights file.

    ``stop_at`` ends the run early after that step with a checkpoint and no weights (returns
    None), as Ctrl-C does; ``resume`` continues it.
    """
    recipe = with_config(get_recipe(config.task, config.recipe, config.arch), config.net_config)
    device = _resolve_device(config.device)
    if config.steps is None and config.minutes is None:
        raise ParameterError("give --minutes or --steps")
    if not 0.0 <= config.protocol_share <= 1.0:
        raise ParameterError(f"--protocol_share is a share, 0 to 1; got {config.protocol_share}")
    if config.protocol_share and config.degradations == "protocol":
        raise ParameterError("--protocol_share mixes the protocol's pairs into another model's: give --degradations randomized")
    if not 0.0 <= config.identity_share < 1.0:
        raise ParameterError(f"--identity_share is a share, 0 to below 1; got {config.identity_share}")
    if config.identity_share and (recipe.scale != 1 or hasattr(ARCHITECTURES[recipe.arch].build, "training_loss")):
        raise ParameterError(
            f"--identity_share needs a network trained on the image alone, at scale 1; {recipe.key} is trained through its degradation's parameters or changes the size"
        )
    images = load_folder(Path(config.data))
    if len(images) <= config.val_images:
        raise ParameterError(f"{config.data} has {len(images)} images; need more than the {config.val_images} held out for validation")
    train_images, val_images = images[config.val_images :], images[: config.val_images]
    val_images = [img[:256, :256] for img in val_images]
    sampler = PairSampler(
        train_images, recipe, config.patch_size or recipe.patch_size, config.seed, config.degradations, config.protocol_share, config.identity_share
    )

    torch.manual_seed(config.seed)
    net = build_net(recipe.arch, **recipe.config)
    if config.init is not None and not config.resume:
        start_from(net, Path(config.init))
    net = net.to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=0.0)
    run_dir = Path(config.out) / recipe.key
    checkpoint_path = run_dir / "last.pt"
    # The planned length, then one more entry per extension; the last entry is the run's length
    # (empty while --minutes is still measuring the speed of the first steps).
    step, elapsed = 0, 0.0
    schedule: list[int] = [] if config.steps is None else [config.steps]
    if config.resume:
        if not checkpoint_path.is_file():
            raise ParameterError(f"--resume: no checkpoint at {checkpoint_path}")
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        if state["recipe"] != recipe.key:
            raise ParameterError(f"--resume: {checkpoint_path} is a {state['recipe']} run, not {recipe.key}")
        if state.get("config", recipe.config) != recipe.config:
            raise ParameterError(f"--resume: {checkpoint_path} trained the architecture options {state['config']}, not {recipe.config} (see --net-config)")
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        # Checkpoints written before the schedule was recorded: their run ends where they stopped. An empty schedule is
        # a --minutes run stopped before it had measured its speed: it measures again from here.
        step, elapsed = state["step"], state["elapsed"]
        schedule = list(state["schedule"]) if "schedule" in state else [state["step"]]
        if config.steps is not None and config.steps > schedule[-1]:
            # Training longer than planned: the cosine schedule restarts over the new length (a warm restart).
            schedule = [*schedule, config.steps]

    def save_checkpoint() -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        state = {"recipe": recipe.key, "config": recipe.config, "net": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "elapsed": elapsed, "schedule": schedule}
        torch.save(state, checkpoint_path.with_suffix(".tmp"))
        checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    net.train()
    bar = tqdm(total=schedule[-1] if schedule else None, initial=step, desc=recipe.key, unit="step", disable=not progress, dynamic_ncols=True)
    start, last_save, calibrate_from = time.monotonic(), time.monotonic(), None
    calibrate_at = step + 10  # --minutes: steps calibrate_at to calibrate_at + 30 measure the speed (after a resume too)
    loss_ema = None
    batches = batch_stream(sampler, step, config.batch_size, config.workers, pin_memory=device.startswith("cuda"))
    try:
        while (not schedule or step < schedule[-1]) and step != stop_at:
            if not schedule and step == calibrate_at:
                calibrate_from = time.monotonic()
            if not schedule and step == calibrate_at + 30:
                per_step = (time.monotonic() - calibrate_from) / 30
                schedule = [max(step + 1, int(config.minutes * 60 / per_step))]
                bar.reset(total=schedule[-1])
                bar.update(step)
            lr = _lr_at(step, schedule, config.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            degraded, clean, params = next(batches)
            with autocast:
                loss = training_loss(net, degraded.to(device, non_blocking=True), clean.to(device, non_blocking=True), params)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            step += 1
            value = loss.item()
            loss_ema = value if loss_ema is None else 0.98 * loss_ema + 0.02 * value
            bar.update(1)
            if time.monotonic() - last_save > config.checkpoint_every:
                elapsed += time.monotonic() - start
                start = last_save = time.monotonic()
                save_checkpoint()
                val = evaluate_net(net, val_images, recipe, device)
                bar.set_postfix(loss=f"{loss_ema:.4f}", val_psnr=f"{val['psnr_in']:.2f}->{val['psnr_out']:.2f}")
    except KeyboardInterrupt:
        bar.close()
        raise KeyboardInterrupt(f"stopped at step {step}; the last checkpoint ({checkpoint_path}) continues with --resume") from None
    bar.close()
    elapsed += time.monotonic() - start
    save_checkpoint()
    if not schedule or step < schedule[-1]:
        return None

    card: dict[str, Any] = {
        "tool": recipe.key,
        "description": recipe.description + provenance(config),
        "degradation": recipe.degradation,
        "arch": recipe.arch,
        "parameters": count_parameters(net),
        "data": data_name(Path(config.data)),
        "train_images": len(train_images),
        "steps": step,
        "schedule": schedule,
        "seconds": round(elapsed, 1),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k not in ("out", "weights", "resume", "device", "workers")}
        | {"steps": step, "minutes": None},
        "validation": evaluate_net(net, val_images, recipe, device),
    }
    if config.eval_data is not None:
        card["evaluation"] = {"data": Path(config.eval_data).name, **evaluate_net(net, load_folder(Path(config.eval_data)), recipe, device)}
    weights = config.weights or run_dir / f"{recipe.key}.safetensors"
    save_net(net, weights, card)
    (run_dir / "card.json").write_text(json.dumps(card, indent=2))
    return card
