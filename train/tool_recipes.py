"""What the project's learned tools are trained on: one ``Recipe`` per tool, and the options of a run.

Adding a learned tool is one ``Recipe`` here (task, degradation, architecture and its
config) plus its weights file in ``weights/``, listed in ``tools/learned.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tiragent.errors import ParameterError
from tiragent.eval.degradations import Params
from tiragent.tasks import TASK_NAMES, Task, is_task

Sampler = Callable[[np.random.Generator], Params]


def _wide_noise(rng: np.random.Generator) -> Params:
    # Wider than the protocol's sigma 20-50 so that mild residual noise (after other tools) is handled too.
    if rng.random() < 0.6:
        return {"kind": "gaussian", "sigma": float(rng.uniform(5, 55))}
    return {"kind": "poisson", "scale": float(rng.uniform(0.5, 3.5))}


def _wide_motion(rng: np.random.Generator) -> Params:
    # Any direction and a continuous range of lengths around the protocol's three settings, so that the estimator learns the kernel, not the protocol.
    sigma = float(rng.uniform(1.5, 10.0))
    return {"radius": math.ceil(2.5 * sigma), "sigma": sigma, "angle": float(rng.uniform(-180, 180))}


def _jitter_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # CBSD68 is mostly muted outdoor scenes; saturation and brightness jitter covers vivid close-ups as well.
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.8), 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.7, 1.1), 0, 1)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _mix_colours(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # CBSD68's photos were JPEGs: their chroma is itself subsampled (relative to luma, its
    # high-frequency chroma is about 3% of McMaster's), so a network trained on them never sees
    # a sharp colour edge. A random colour-mixing matrix turns luma edges into colour edges.
    if rng.random() < 0.75:
        mix = (np.eye(3) + rng.normal(0.0, 0.35, (3, 3))).astype(np.float32)
        image = np.clip(image @ mix.T, 0, 1)
    return _jitter_colour(image, rng)


@dataclass(frozen=True)
class Recipe:
    """How to train one learned tool: which degradation it undoes and which network it uses."""

    name: str
    task: Task
    degradation: str
    arch: str
    config: dict[str, Any]
    description: str
    fixed: Params = field(default_factory=dict)
    sample: Sampler | None = None
    patch_size: int = 128
    whole_image: bool = False
    """Degrade whole images, then crop: for degradations that depend on the whole frame (haze's depth map)."""
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
    """Applied to each clean image, crop or frame before it is degraded (the target is the augmented image)."""
    whole_frames: bool = False
    """Train on whole frames instead of crops: views of 60-100% of the image, resized to the patch size and degraded as photos of their own (for networks that need the whole frame)."""

    @property
    def key(self) -> str:
        return f"{self.task}.{self.name}"

    def params(self, rng: np.random.Generator) -> Params:
        return {**(self.sample(rng) if self.sample else {}), **self.fixed}

    @property
    def scale(self) -> int:
        return int(self.fixed.get("scale", 1)) if self.task == Task.SR else 1


UNET = {"width": 32, "blocks": [1, 2, 4], "unshuffle": 2}

RECIPES: dict[str, Recipe] = {
    r.key: r
    for r in [
        Recipe("unet", Task.DENOISE, "noise", "resunet", UNET, "Blind denoiser (residual UNet, trained on Gaussian sigma 5-55 and Poisson noise).", sample=_wide_noise),
        Recipe("unet", Task.MOTION_DEBLUR, "motion", "resunet", UNET, "Blind motion deblurring (residual UNet, trained on the protocol's motion blur)."),
        Recipe(
            "kernel_wiener",
            Task.MOTION_DEBLUR,
            "motion",
            "motionkernel",
            {"width": 32, "spread": True},
            "Wiener deconvolution with a learned straight motion trail: a CNN estimates the blur's axis, length and profile (uniform, centred or one-sided), the sparsest deconvolution picks the trail's direction. Best on uniform linear motion blur of a noise-free image; denoise first.",
            sample=_wide_motion,
        ),
        Recipe("unet", Task.DEFOCUS_DEBLUR, "defocus", "resunet", UNET, "Blind defocus deblurring (residual UNet, trained on disk blur of radius 3-6)."),
        Recipe("unet", Task.DERAIN, "rain", "resunet", UNET, "Rain-streak removal (residual UNet)."),
        Recipe("unet", Task.DEHAZE, "haze", "resunet", UNET, "Dehazing (residual UNet, trained on the scattering model with A 0.7-1.0, beta 0.6-1.8).", whole_image=True),
        Recipe(
            "hazenet",
            Task.DEHAZE,
            "haze",
            "hazenet",
            {"width": 32},
            "Dehazing that sees the whole frame: a CNN estimates the transmission map and the airlight colour, and the scattering model is inverted at full resolution.",
            whole_frames=True,
            patch_size=192,
            augment=_jitter_colour,
        ),
        Recipe(
            "unet",
            Task.DEJPEG,
            "jpeg",
            "resunet",
            {"width": 64, "blocks": [2, 2, 2], "unshuffle": 2},
            "JPEG artifact removal for quality 10-29 (residual UNet); also restores subsampled chroma.",
            augment=_mix_colours,
        ),
        Recipe("unet", Task.LOWLIGHT, "dark", "resunet", UNET, "Low-light enhancement (residual UNet, trained on brightness shift, gamma and peak rescaling)."),
        Recipe(
            "curve",
            Task.LOWLIGHT,
            "dark",
            "curvenet",
            {"width": 24},
            "Low-light enhancement by one global tone curve: a CNN reads the whole frame and its luminance histogram and predicts a monotone curve, applied to every colour channel. Undoes under-exposure, gain and gamma without touching edges or texture; does not denoise, and does not brighten one region more than another.",
            whole_frames=True,
            patch_size=192,
            augment=_jitter_colour,
        ),
        Recipe("srnet_x4", Task.SR, "lowres", "srnet", {"scale": 4, "width": 48, "blocks": 8}, "x4 super-resolution of bicubic-downscaled images (residual CNN).", fixed={"scale": 4}),
        Recipe("srnet_x2", Task.SR, "lowres", "srnet", {"scale": 2, "width": 48, "blocks": 8}, "x2 super-resolution of bicubic-downscaled images (residual CNN).", fixed={"scale": 2}, patch_size=96),
    ]
}


def get_recipe(task: str, name: str | None = None, arch: str | None = None) -> Recipe:
    """The task's recipe by name, or its first recipe using architecture ``arch``, or its first."""
    if not is_task(task):
        raise ParameterError(f"unknown task {task!r}; tasks: {', '.join(TASK_NAMES)}")
    choices = [r for r in RECIPES.values() if r.task == task]
    if arch is not None:
        listing = ", ".join(f"{r.name} ({r.arch})" for r in choices)
        choices = [r for r in choices if r.arch == arch]
        if not choices:
            raise ParameterError(f"task {task!r} has no recipe with architecture {arch!r}; recipes: {listing}")
    if name is None:
        return choices[0]
    for recipe in choices:
        if recipe.name == name:
            return recipe
    raise ParameterError(f"task {task!r} has no recipe {name!r}{f' with architecture {arch!r}' if arch else ''}; recipes: {', '.join(r.name for r in choices)}")


def with_config(recipe: Recipe, overrides: str | None) -> Recipe:
    """The recipe with some of its architecture's options replaced (``--net-config``, a JSON object)."""
    if not overrides:
        return recipe
    try:
        changes = json.loads(overrides)
    except json.JSONDecodeError as err:
        raise ParameterError(f"--net-config must be a JSON object such as '{{\"width\": 64}}' ({err})") from None
    if not isinstance(changes, dict):
        raise ParameterError(f"--net-config must be a JSON object such as '{{\"width\": 64}}', not {overrides!r}")
    return replace(recipe, config={**recipe.config, **changes})


@dataclass
class ToolTrainConfig:
    """Options of ``tir-agent tools train``; each field's help is its command-line help."""

    task: str = field(metadata={"help": "The task the tool restores (denoise, motion_deblur, ..., sr, lowlight)."})
    data: Path = field(metadata={"help": "Folder of clean training images."})
    recipe: str | None = field(default=None, metadata={"help": "Which of the task's recipes (default: the first; see `tools recipes`)."})
    arch: str | None = field(default=None, metadata={"help": "Architecture: the task's recipe that uses it (resunet, srnet, motionkernel, hazenet, curvenet)."})
    net_config: str | None = field(
        default=None, metadata={"help": "JSON object of architecture options that replace the recipe's, e.g. '{\"width\": 64, \"blocks\": [2, 2, 2]}'."}
    )
    degradations: str = field(
        default="protocol", metadata={"help": "Degradations to train on: 'protocol' (the benchmark's) or 'randomized' (eval/randomized.py)."}
    )
    protocol_share: float = field(
        default=0.0,
        metadata={"help": "With --degradations randomized: share of the pairs made by the protocol's own degradation instead, so that a fine-tune keeps what the network knew."},
    )
    identity_share: float = field(
        default=0.0,
        metadata={
            "help": "Share of the pairs whose input is a sharp, clean camera-native photo (eval.randomized.camera_native) and whose target is "
            "that same input, so that the network leaves alone what its degradation is absent from (a deblurrer on a sharp real photo). "
            "Networks trained through their degradation's parameters (kernel_wiener, curve) cannot take it."
        },
    )
    init: Path | None = field(default=None, metadata={"help": "Start from the weights of this safetensors file (same architecture and options): fine-tuning."})
    out: Path = field(default=Path("runs/tools"), metadata={"help": "Run folder: checkpoints go to OUT/TASK.RECIPE/."})
    weights: Path | None = field(default=None, metadata={"help": "Where to write the final safetensors (default: the run folder)."})
    eval_data: Path | None = field(default=None, metadata={"help": "Folder of clean images for the final evaluation (never trained on)."})
    minutes: float | None = field(default=10.0, metadata={"help": "Training time; fixes the step count from the speed of the first steps."})
    steps: int | None = field(default=None, metadata={"help": "Number of steps (overrides --minutes; reproduces a run exactly)."})
    batch_size: int = field(default=8, metadata={"help": "Crops per step."})
    workers: int = field(default=0, metadata={"help": "Processes that prepare batches ahead of the training steps (0: in the training process); batches stay the same."})
    patch_size: int | None = field(default=None, metadata={"help": "Side of the clean crops (default: the recipe's)."})
    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW; warm-up, then cosine down to 0.01 of it)."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights and of every batch."})
    device: str = field(default="auto", metadata={"help": "cuda, cpu or auto."})
    resume: bool = field(default=False, metadata={"help": "Continue from the run folder's last checkpoint; with a larger --steps, train on (the schedule restarts)."})
    checkpoint_every: float = field(default=60.0, metadata={"help": "Seconds between checkpoints."})
    val_images: int = field(default=4, metadata={"help": "Training images held out for the validation PSNR shown while training."})
