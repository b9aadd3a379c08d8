"""Training the learned degradation detector (``server/detector_net.py``) on the randomized degradation model.

1. Render: each sample is a training photo (sometimes shrunk, flipped), clean or degraded by
   one to three degradations in a physical or shuffled order, by the randomized model or the
   protocol; stored are a few crops at its own resolution, its 13 global statistics, which
   degradations it carries and their severities. Some photos first become camera-native
   (``--camera_share``), and some of those dim scenes (``--dim_share``): dark, with camera noise,
   and labelled noise only, since their darkness is the scene's, and some close-ups of parallel edges (``--oriented_share``),
   which are not motion blur. A share of the degraded samples (``--combination_share``) carries one of the
   benchmark groups' 16 combinations, which a uniform draw makes rare (dark with noise: 1 in 44
   samples). Some of the other samples are dim scenes with noise (``--dim_scene_share``), not labelled low light, so
   that noise is not read as evidence of darkness. Rendering runs in worker processes and is
   cached in ``OUT`` (``train.npz``, ``val.npz``), so a resumed run does not render again.
2. Train: presence by binary cross-entropy, severity by squared error where present.
3. Calibrate: one temperature per degradation, fitted on samples from photos held out of
   training (``--val_fraction``), and written into the weights.

    tir-agent train detector --data ../shared/data/clean/CBSD432 ../shared/data/clean/CSun_Hays80_half --out runs/detector
"""

from __future__ import annotations

import json
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tiragent.errors import ParameterError
from tiragent.eval.bench import all_combinations
from tiragent.eval.calibration import fit_temperature, presence_scores
from tiragent.eval.degradations import MODELS, degrade
from tiragent.eval.randomized import camera_file, camera_native, camera_noise
from tiragent.images import random_crop, read_image
from tiragent.server.detector_net import DEGRADATIONS, SEVERITIES, DetectorNet, DetectorNetConfig, severity_of, views
from tiragent.server.nets import count_parameters, save_net
from tiragent.train.common import recipe_of, render_key, resumable, split_photos, warmup_cosine

PHYSICAL_ORDER = ["haze", "dark", "motion", "defocus", "rain", "lowres", "noise", "jpeg"]
"""The order a camera meets degradations in (scene, optics, sensor, file); half the samples shuffle it instead."""
COUNT_SHARES = (0.15, 0.45, 0.28, 0.12)
"""Shares of samples with 0 (clean), 1, 2 and 3 degradations."""
SMALL_SIDES = (144, 320)
"""Sides of the small crops (``small_share``): a small photo is not a low-resolution one."""
DIM_SCENE_EXPOSURE = (0.55, 0.9)
"""Exposure range (log-uniform) of ``dim_scene_share``'s dim scenes: above the protocol's low light on the same photo
(a shift of 30-49 of 255, a gamma of 1.4-2, a maximum of 100-149), so darkness beyond it stays evidence of low light."""
CAMERA_SHARES = (0.35, 0.45, 0.20)
"""Camera-native samples: shares left clean, given mild camera noise only (sigma 2-16), and drawn as the others are
(with dim scenes in the mixture, never ``dark``: a camera-native photo's brightness is then its scene's, ``dim_share``)."""


@dataclass
class DetectorTrainConfig:
    data: list[Path] = field(default_factory=list, metadata={"help": "Folders of clean training photos (never the evaluation sets)."})
    out: Path = field(default=Path("runs/detector"), metadata={"help": "Run folder: rendered data, checkpoint, weights and card."})
    weights: Path | None = field(default=None, metadata={"help": "Where to write the final weights; default: OUT/detector_net.safetensors."})
    samples: int = field(default=6000, metadata={"help": "Training samples to render."})
    val_samples: int = field(default=600, metadata={"help": "Validation samples (from held-out photos) for calibration and the card."})
    val_fraction: float = field(default=0.1, metadata={"help": "Share of the photos held out for validation."})
    train_views: int = field(default=2, metadata={"help": "Random crops stored per training sample."})
    randomized_share: float = field(default=0.7, metadata={"help": "Share of degraded samples made by the randomized model; the rest by the protocol."})
    camera_share: float = field(
        default=0.25,
        metadata={"help": "Share of samples that first become camera-native photos (eval.randomized.camera_native): clean, mildly noisy, or degraded further; 0: none."},
    )
    dim_share: float = field(
        default=0.0,
        metadata={
            "help": "Share of the camera-native samples that are dim scenes (eval.randomized.camera_native's dim: exposure 0.15-0.7) with camera "
            "noise and nothing else, labelled noise, not low light: a dark photo at the camera's own resolution and noise is left dark."
        },
    )
    oriented_share: float = field(
        default=0.0,
        metadata={
            "help": "Share of the camera-native samples whose window is the most oriented of 4 draws (eval.randomized.camera_native's windows): "
            "close-ups of parallel edges, which are not motion blur (PolyU's real photos are such close-ups)."
        },
    )
    combination_share: float = field(
        default=0.0,
        metadata={
            "help": "Share of the degraded samples that carry one of the 16 combinations of the task's groups A-C "
            "(eval.bench.COMBINATIONS: the combinations the benchmarks ask for, never their images or implementations), in their order; "
            "the rest draw any one to three degradations. Those pairs (dark then strong noise, rain then low resolution) are otherwise rare."
        },
    )
    combination_model: str = field(
        default="",
        metadata={
            "help": "The degradation model that renders the combination samples: 'protocol' (the benchmarks' own implementations and "
            "strengths, so dark with noise is always strong noise, never the mild noise of a dim scene), 'randomized', or '' (as the "
            "other samples, by --randomized_share)."
        },
    )
    dim_scene_share: float = field(
        default=0.0,
        metadata={
            "help": "Share of the samples that are not camera-native whose photo is first a dim scene (an exposure of 0.55-0.9, "
            "DIM_SCENE_EXPOSURE), then degraded as the others but never by low light, and always with noise: labelled noise, not "
            "low light, so that strong noise on a dim photo is not read as darkness (the combinations teach dark with noise)."
        },
    )
    small_share: float = field(default=0.15, metadata={"help": "Share of the other samples cropped to 144-320 px first, so that a small photo is not read as low-resolution."})
    steps: int = field(default=3000, metadata={"help": "Optimiser steps."})
    batch: int = field(default=64, metadata={"help": "Samples per step."})
    lr: float = field(default=2e-3, metadata={"help": "Peak learning rate (AdamW), after a linear warm-up of 5% of the steps, then cosine decay."})
    severity_weight: float = field(default=2.0, metadata={"help": "Weight of the severity loss beside the presence loss."})
    width: int = field(default=32, metadata={"help": "CNN width (DetectorNetConfig.width)."})
    view: int = field(default=96, metadata={"help": "Crop side (DetectorNetConfig.view)."})
    max_pool: bool = field(default=False, metadata={"help": "Pool each layer's maximum too (DetectorNetConfig.max_pool)."})
    workers: int = field(default=2, metadata={"help": "Processes that render samples."})
    seed: int = field(default=0, metadata={"help": "Seed of rendering, initialisation and batches."})
    resume: bool = field(default=False, metadata={"help": "Continue from OUT/last.pt."})


PROTOCOL_COMBINATIONS = [combo for _, combo in all_combinations()]
MIXTURE_FIELDS = ("randomized_share", "camera_share", "small_share", "dim_share", "oriented_share", "combination_share", "combination_model", "dim_scene_share")
"""The config fields that are ``training_image``'s settings, by the same names."""


def draw_degradations(rng: np.random.Generator, exclude: tuple[str, ...] = (), combination_share: float = 0.0) -> tuple[list[str], bool]:
    """None (``COUNT_SHARES[0]`` of the samples), or one to three degradations in a physical or shuffled order; of the
    degraded, ``combination_share`` carry one of the protocol's combinations instead, in its order (then the flag is true)."""
    count = int(rng.choice(len(COUNT_SHARES), p=COUNT_SHARES))
    if count and combination_share > 0 and rng.random() < combination_share:
        combos = [c for c in PROTOCOL_COMBINATIONS if not set(c) & set(exclude)]
        return list(combos[int(rng.integers(len(combos)))]), True
    kinds = [d for d in PHYSICAL_ORDER if d not in exclude]
    chosen = [str(d) for d in rng.choice(kinds, size=count, replace=False)]
    if rng.random() < 0.5:
        return sorted(chosen, key=PHYSICAL_ORDER.index), False
    return chosen, False


def training_image(
    path: str,
    rng: np.random.Generator,
    randomized_share: float,
    camera_share: float = 0.0,
    small_share: float = 0.0,
    dim_share: float = 0.0,
    oriented_share: float = 0.0,
    combination_share: float = 0.0,
    combination_model: str = "",
    dim_scene_share: float = 0.0,
) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    """One photo of the detector's training mixture, degraded: ``(image, degradations present, degrade's records)``."""
    image = read_image(path)
    camera = rng.random() < camera_share
    scene_dim = not camera and dim_scene_share > 0 and rng.random() < dim_scene_share
    dim = camera and dim_share > 0 and rng.random() < dim_share
    oriented = camera and oriented_share > 0 and rng.random() < oriented_share
    if camera:
        image, _ = camera_native(image, rng, dim=dim, windows=4 if oriented else 1)
    elif rng.random() < 0.3:
        factor = float(rng.uniform(1.0, 1.6))
        h, w = image.shape[:2]
        image = cv2.resize(image, (round(w / factor), round(h / factor)), interpolation=cv2.INTER_AREA)
    if not camera and rng.random() < small_share:
        image = random_crop(image, rng, *SMALL_SIDES)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = np.ascontiguousarray(np.rot90(image, int(rng.integers(4))) if rng.random() < 0.25 else image)
    if scene_dim:
        image = (image * np.exp(rng.uniform(*np.log(DIM_SCENE_EXPOSURE)))).astype(np.float32)
    # a dim scene is recorded at high gain: it carries camera noise, and nothing else is drawn on it
    kind = 1 if dim else int(rng.choice(len(CAMERA_SHARES), p=CAMERA_SHARES)) if camera else 2
    exclude = ("dark",) if (camera and dim_share > 0) or scene_dim else ()
    names, combination = ([], False) if kind == 0 else (["noise"], False) if kind == 1 else draw_degradations(rng, exclude, combination_share)
    if scene_dim and "noise" not in names:  # a dim scene is recorded at high gain: noise, before the file's compression
        names.insert(names.index("jpeg") if "jpeg" in names else len(names), "noise")
    model = "randomized" if kind == 1 or rng.random() < randomized_share else "protocol"
    if combination and combination_model:
        model = combination_model
    params = {"noise": camera_noise(rng)} if kind == 1 else None
    records: list[dict[str, Any]] = []
    if names:
        image, records = degrade(image, names, seed=int(rng.integers(2**31)), params=params, model=model)
    if camera and "jpeg" not in names and rng.random() < 0.7:
        image, _ = camera_file(image, rng)
    return image, names, records


def render_sample(path: str, seed: int, config: DetectorTrainConfig, crops: int | None) -> dict[str, np.ndarray]:
    """One sample of one photo under ``config``'s mixture: ``crops`` random crops (None: the five fixed views of inference)."""
    from tiragent.server.perception import features

    rng = np.random.default_rng(seed)
    image, names, records = training_image(path, rng, **{name: getattr(config, name) for name in MIXTURE_FIELDS})
    severity = np.zeros(len(SEVERITIES), np.float32)
    mask = np.zeros(len(SEVERITIES), np.float32)
    for record in records:
        name = record["degradation"]
        if name in SEVERITIES:
            value = severity_of(name, record["params"])
            if value is not None:
                j = list(SEVERITIES).index(name)
                severity[j], mask[j] = SEVERITIES[name].encode(value), 1.0
    cut = views(image, config.view, count=crops or 5, rng=rng if crops else None)
    return {
        "crops": np.round(cut * 255).astype(np.uint8),
        "stats": features(image).astype(np.float32),
        "present": np.array([name in names for name in DEGRADATIONS], np.float32),
        "severity": severity,
        "mask": mask,
    }


def render(paths: list[Path], count: int, seed: int, config: DetectorTrainConfig, crops: int | None, desc: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    jobs = [(str(paths[int(rng.integers(len(paths)))]), int(rng.integers(2**31))) for _ in range(count)]
    samples = []
    with ProcessPoolExecutor(max_workers=max(1, config.workers)) as pool:
        mapped = pool.map(render_sample, *zip(*jobs), [config] * count, [crops] * count, chunksize=16)
        for sample in tqdm(mapped, total=count, desc=desc, unit="sample"):
            samples.append(sample)
    return {key: np.stack([s[key] for s in samples]) for key in samples[0]}


def card_recipe(config: DetectorTrainConfig) -> dict[str, Any]:
    """The settings that make the weights what they are (not where they are written, nor whether the run resumed)."""
    return recipe_of(config, skip=("resume", "out", "weights"))


RENDER_FIELDS = (*MIXTURE_FIELDS, "view", "train_views", "seed", "data")
"""The recipe fields a rendered cache depends on: a cache made under others is rendered again."""


def cached_render(file: Path, paths: list[Path], count: int, seed: int, config: DetectorTrainConfig, crops: int | None, desc: str) -> dict[str, np.ndarray]:
    key = render_key(card_recipe(config), RENDER_FIELDS, count)
    if file.is_file():
        with np.load(file) as data:
            if "recipe" in data.files and str(data["recipe"]) == key:
                return {k: data[k] for k in data.files if k != "recipe"}
        print(f"{file} was rendered under another recipe: rendering again")
    data = render(paths, count, seed, config, crops, desc)
    np.savez(file, recipe=np.array(key), **data)
    return data


def _tensors(data: dict[str, np.ndarray], index: np.ndarray) -> tuple[torch.Tensor, ...]:
    crops = torch.from_numpy(data["crops"][index]).permute(0, 1, 4, 2, 3).float() / 255.0
    return crops, *(torch.from_numpy(data[k][index]) for k in ("stats", "present", "severity", "mask"))


@torch.inference_mode()
def predict_set(net: DetectorNet, data: dict[str, np.ndarray], batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits and severities (encoded) for every sample."""
    logits, severity = [], []
    for start in range(0, len(data["present"]), batch):
        crops, stats, *_ = _tensors(data, np.arange(start, min(start + batch, len(data["present"]))))
        z, s = net(crops, stats)
        logits.append(z.numpy())
        severity.append(s.numpy())
    return np.concatenate(logits), np.concatenate(severity)


def summarize(probabilities: np.ndarray, present: np.ndarray, severity: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    scores = presence_scores(probabilities, present, DEGRADATIONS)
    out: dict[str, Any] = {
        "exact_set": round(scores["exact"], 4),
        "accuracy": {d: round(a, 4) for d, a in scores["accuracy"].items()},
        "ece": round(scores["ece"], 4),
        "severity_mae": {},
    }
    for j, (name, spec) in enumerate(SEVERITIES.items()):
        rows = mask[:, j] > 0
        if rows.any():
            errors = [abs(spec.decode(a) - spec.decode(b)) for a, b in zip(severity[rows, j], truth[rows, j])]
            out["severity_mae"][name] = round(float(np.mean(errors)), 3)
    return out


def train_detector(config: DetectorTrainConfig) -> Path:
    if config.combination_model not in ("", *MODELS):
        raise ParameterError(f"--combination_model {config.combination_model!r}: one of {', '.join(MODELS)}, or empty for --randomized_share's mixture")
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    train_photos, val_photos = split_photos(config.data, config.val_fraction)
    started = time.time()
    train = cached_render(out / "train.npz", train_photos, config.samples, config.seed, config, config.train_views, "render train")
    val = cached_render(out / "val.npz", val_photos, config.val_samples, config.seed + 1, config, None, "render validation")
    torch.manual_seed(config.seed)
    net = DetectorNet(DetectorNetConfig(width=config.width, view=config.view, max_pool=config.max_pool, stats=train["stats"].shape[1]))
    net.stats_mean.copy_(torch.from_numpy(train["stats"].mean(axis=0)))
    net.stats_std.copy_(torch.from_numpy(train["stats"].std(axis=0) + 1e-6))
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = warmup_cosine(optimizer, config.steps)
    step, log = 0, []
    checkpoint = out / "last.pt"
    recipe = card_recipe(config)
    state = resumable(checkpoint, recipe) if config.resume else None
    if state is not None:
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step, log = state["step"], state["log"]
    rng = np.random.default_rng(config.seed + 7)
    for _ in range(step):  # the batches a resumed run already saw
        rng.choice(len(train["present"]), size=config.batch)
    net.train()
    bar = tqdm(total=config.steps, initial=step, desc="detector", unit="step")
    while step < config.steps:
        crops, stats, present, severity, mask = _tensors(train, rng.choice(len(train["present"]), size=config.batch))
        logits, predicted = net(crops, stats)
        presence_loss = F.binary_cross_entropy_with_logits(logits, present)
        severity_loss = ((predicted - severity) ** 2 * mask).sum() / mask.sum().clamp(min=1)
        loss = presence_loss + config.severity_weight * severity_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        bar.update(1)
        if step % 50 == 0:
            log.append({"step": step, "presence_loss": round(float(presence_loss), 4), "severity_loss": round(float(severity_loss), 5)})
            bar.set_postfix(presence=f"{float(presence_loss):.3f}", severity=f"{float(severity_loss):.4f}")
        if step % 500 == 0 or step == config.steps:
            torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "step": step, "log": log, "recipe": recipe}, checkpoint)
    bar.close()
    net.eval()
    logits, severity = predict_set(net, val)
    before = summarize(1 / (1 + np.exp(-logits)), val["present"], severity, val["severity"], val["mask"])
    temperatures = [fit_temperature(logits[:, j], val["present"][:, j]) for j in range(len(DEGRADATIONS))]
    net.temperature.copy_(torch.tensor(temperatures, dtype=torch.float32))
    after = summarize(1 / (1 + np.exp(-logits / np.array(temperatures))), val["present"], severity, val["severity"], val["mask"])
    card = {
        "model": "detector",
        "parameters": count_parameters(net),
        "data": [str(d) for d in config.data],
        "train_photos": len(train_photos),
        "validation_photos": len(val_photos),
        "recipe": recipe,
        "temperatures": dict(zip(DEGRADATIONS, (round(t, 4) for t in temperatures))),
        "validation_uncalibrated": before,
        "validation": after,
        "minutes": round((time.time() - started) / 60, 1),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "log": log[-1:] if log else [],
    }
    weights = config.weights or out / "detector_net.safetensors"
    save_net(net, weights, card)
    (out / "card.json").write_text(json.dumps(card, indent=1))
    print(json.dumps({"weights": str(weights), "validation": after}, indent=1))
    return weights
