"""The options of the policy-training commands, as dataclasses whose field help is the command-line help.

Kept apart from the code that runs them, so that building the CLI's parser imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tiragent.errors import ParameterError, TirAgentError

if TYPE_CHECKING:
    from tiragent.agent.conversation import ViewConfig


def _check_ratios(single: float, clean: float, camera: float) -> None:
    if not 0 <= single + clean <= 1 or min(single, clean) < 0:
        raise TirAgentError(f"--single_ratio and --clean_ratio must be shares whose sum lies in [0, 1], not {single} and {clean}")
    if not 0 <= camera <= 1:
        raise TirAgentError(f"--camera_ratio must lie in [0, 1], not {camera}")


def _check_model(model: str) -> None:
    from tiragent.eval.degradations import MODELS  # imported here, on a config's creation: building the parser stays light

    if model not in MODELS:
        raise TirAgentError(f"unknown degradation source {model!r}: {' or '.join(repr(m) for m in MODELS)}")


FIXED_VIEWS_HELP = (
    "Show every image with the same number of visual tokens: the whole view at exactly the whole view's longest side "
    "(smaller images upscaled, bicubic) and the crop always beside it (the whole image, upscaled, where it is smaller "
    "than the crop). Without it a small image is a few tokens, and a policy trained on small crops learns size as a "
    "cue that photos of another size do not give (a 125-px low-resolution photo looked to it like a sharp one)."
)


PERCEPTION_CONTEXT_HELP = (
    "Side of a larger window of the same photo, around the crop and degraded with the same draws, that the detector reads"
    " for the task prompt (0: the crop itself). The detector takes size as a cue (a small image reads as low-resolution),"
    " so its reading of a small training crop is not what it says of a photo of test size. Needs --perception."
)


def _check_context(context: int, crop: int) -> None:
    if context and context <= crop:
        raise TirAgentError(f"--perception_context {context} must be 0 or larger than --crop {crop}")


@dataclass
class GenSFTConfig:
    """Options of ``tir-agent train gen-sft``; each field's help is its command-line help."""

    clean: Path = field(metadata={"help": "Folder of clean training photos."})
    out: Path = field(metadata={"help": "Output folder (data.jsonl, images/, tools.json, card); a rerun continues it."})
    images: int = field(default=64, metadata={"help": "Training images to make (each gives one searched trajectory and its perturbations)."})
    crop: int = field(default=256, metadata={"help": "Side of the random crop taken from each clean photo."})
    workers: int = field(default=4, metadata={"help": "Images searched at once (their tool calls reach the server together)."})
    server: str | None = field(default=None, metadata={"help": "Streamable-HTTP URL of a running server (default: start one over stdio)."})
    seed: int = field(default=0, metadata={"help": "Seed of the crops, degradations and perturbations."})
    degradations: str = field(
        default="protocol",
        metadata={"help": "Where degradations come from: 'protocol' (the benchmark's) or 'randomized' (the training model, eval/randomized.py)."},
    )
    single_ratio: float = field(default=0.25, metadata={"help": "Share of images with a single degradation."})
    clean_ratio: float = field(default=0.1, metadata={"help": "Share of clean images (the right answer is STOP at once)."})
    camera_ratio: float = field(
        default=0.0, metadata={"help": "Share of camera-native photos (smooth, their own JPEG), half clean, half with mild camera noise: what real photos look like."}
    )
    shuffle_ratio: float = field(default=0.5, metadata={"help": "Chance that a trajectory of two or more steps gets a shuffled-order twin."})
    substitute_ratio: float = field(default=0.5, metadata={"help": "Chance that a trajectory gets a twin with one tool replaced."})
    whole_view: int = field(default=256, metadata={"help": "Longest side of the whole-image view the policy sees."})
    crop_view: int = field(default=128, metadata={"help": "Side of the native-resolution crop shown beside it (0: none)."})
    fixed_views: bool = field(default=False, metadata={"help": FIXED_VIEWS_HELP})
    short_prompt: bool = field(default=False, metadata={"help": "Short system prompt and tool list, for small policies."})
    perception: bool = field(default=False, metadata={"help": "Add the detector's reading of the photo to the task prompt, as text."})
    detector: str = field(
        default="", metadata={"help": "Detector of that reading: 'logistic', 'learned', or '' (the server's own); the policy keeps it in its views."}
    )
    perception_context: int = field(default=0, metadata={"help": PERCEPTION_CONTEXT_HELP})
    search_metrics: list[str] = field(
        default_factory=lambda: ["psnr", "ssim", "ms_ssim"],
        metadata={"help": "Full-reference metrics the search maximises (the mean of their normalised values); psnr alone is several times faster."},
    )
    device: str = field(default="auto", metadata={"help": "Device of the stdio server this starts."})
    reuse_search: Path | None = field(
        default=None,
        metadata={"help": "An earlier gen-sft folder made with the same crop, degradations and search metrics: an image it searched is replayed along its path instead of searched again (its views, perception and twins are made anew)."},
    )

    def __post_init__(self) -> None:
        _check_model(self.degradations)
        from tiragent.eval.metrics import FULL_REFERENCE

        unknown = [m for m in self.search_metrics if m not in FULL_REFERENCE]
        if not self.search_metrics or unknown:
            raise TirAgentError(f"--search_metrics takes full-reference metrics ({', '.join(FULL_REFERENCE)}), not {unknown or 'nothing'}")
        _check_ratios(self.single_ratio, self.clean_ratio, self.camera_ratio)
        _check_context(self.perception_context, self.crop)
        if self.perception_context and not self.perception:
            raise TirAgentError("--perception_context is the window the detector reads for the prompt: it needs --perception")

    @property
    def views(self) -> ViewConfig:
        from tiragent.agent.conversation import ViewConfig

        return ViewConfig(
            whole=self.whole_view,
            crop=self.crop_view,
            short_prompt=self.short_prompt,
            perception=self.perception,
            detector=self.detector,
            fixed_size=self.fixed_views,
        )


@dataclass
class SFTRunConfig:
    """Options of ``tir-agent train sft``; each field's help is its command-line help."""

    data: Path = field(metadata={"help": "Folder written by `tir-agent train gen-sft` (data.jsonl, images/, tools.json)."})
    model: str = field(metadata={"help": "Policy to start from: a checkpoint folder or a hub id (Qwen2.5-VL or Qwen3-VL)."})
    out: Path = field(metadata={"help": "Output folder: checkpoints, then the final policy (loads with --policy OUT)."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft) instead of every weight."})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the data."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimiser steps (-1: by epochs)."})
    batch_size: int = field(default=4, metadata={"help": "Conversations per step."})
    lr: float = field(default=1e-4, metadata={"help": "Peak learning rate (linear warm-up, then cosine)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of the steps spent warming up."})
    save_steps: int = field(default=200, metadata={"help": "Steps between checkpoints."})
    seed: int = field(default=0, metadata={"help": "Seed of the order of the data and of LoRA's initialisation."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in OUT."})


@dataclass
class RLRunConfig:
    """Options of ``tir-agent train rl``; each field's help is its command-line help."""

    init: str = field(metadata={"help": "Policy to start from: the folder `tir-agent train sft` wrote (or any Qwen-VL checkpoint)."})
    clean: Path = field(metadata={"help": "Folder of clean training photos; episodes degrade random crops of them."})
    out: Path = field(metadata={"help": "Output folder: log.jsonl, checkpoints, then the final policy (loads with --policy OUT)."})
    server: str | None = field(default=None, metadata={"help": "Streamable-HTTP URL of a running server (default: start one over stdio)."})
    group: int = field(default=4, metadata={"help": "Rollouts per image (G); advantages are taken within each group."})
    batch: int = field(default=2, metadata={"help": "Images per RL step (B); all B x G rollouts are in flight at once."})
    steps: int = field(default=50, metadata={"help": "RL steps (optimiser steps)."})
    kl: float = field(default=0.0, metadata={"help": "Weight of the KL term to the initial policy (beta; 0: no reference model)."})
    lr: float = field(default=1e-5, metadata={"help": "Learning rate (constant after a short warm-up)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts."})
    max_turns: int = field(default=4, metadata={"help": "Tool calls an episode may make before it is cut."})
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens the policy may generate per turn."})
    images: int = field(default=512, metadata={"help": "Training images planned (cycled when the steps need more)."})
    crop: int = field(default=256, metadata={"help": "Side of the random crop of each clean photo."})
    single_ratio: float = field(default=0.25, metadata={"help": "Share of images with a single degradation."})
    clean_ratio: float = field(default=0.1, metadata={"help": "Share of clean images (the right answer is STOP at once)."})
    camera_ratio: float = field(
        default=0.0, metadata={"help": "Share of camera-native photos (smooth, their own JPEG), half clean, half with mild camera noise: what real photos look like."}
    )
    degradations: str = field(
        default="protocol", metadata={"help": "Where the training images' degradations come from: 'protocol' or 'randomized'."}
    )
    perception_context: int = field(default=0, metadata={"help": PERCEPTION_CONTEXT_HELP})
    eval_clean: Path | None = field(default=None, metadata={"help": "Held-out clean photos for the periodic evaluation (default: none)."})
    eval_images: int = field(default=8, metadata={"help": "Held-out images evaluated (greedy, one rollout each)."})
    eval_steps: int = field(default=10, metadata={"help": "RL steps between held-out evaluations (0: never)."})
    concurrency: int = field(default=0, metadata={"help": "Rollouts in flight at most (0: all B x G at once)."})
    save_steps: int = field(default=10, metadata={"help": "Steps between checkpoints."})
    seed: int = field(default=0, metadata={"help": "Seed of the images, the sampling and the order."})
    device: str = field(default="auto", metadata={"help": "Device of the stdio server this starts."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in OUT."})

    def __post_init__(self) -> None:
        if self.group < 2:
            raise TirAgentError("--group must be at least 2: advantages are taken within a group")
        if self.batch < 1 or self.steps < 1 or self.max_turns < 1:
            raise TirAgentError("--batch, --steps and --max_turns must be at least 1")
        _check_model(self.degradations)
        _check_ratios(self.single_ratio, self.clean_ratio, self.camera_ratio)
        _check_context(self.perception_context, self.crop)


@dataclass
class RewardConfig:
    """Settings of the adaptive reward; each field's help is its command-line help."""

    dimensions: list[str] = field(
        default_factory=lambda: ["psnr", "ssim", "ms_ssim", "niqe"], metadata={"help": "Quality metrics whose improvement over the input is scored."}
    )
    prior_weights: list[float] | None = field(default=None, metadata={"help": "Prior weight of each dimension (default: equal)."})
    ema_decay: float = field(default=0.9, metadata={"help": "Decay of the moving averages of each dimension's batch improvement."})
    horizon: int = field(default=10, metadata={"help": "RL steps over which a dimension's trend is measured."})
    weight_temperature: float = field(default=1.0, metadata={"help": "How strongly trends move the weights (larger: gentler)."})
    max_trend: float = field(default=5.0, metadata={"help": "Trends are clipped to +- this many spreads."})
    adaptive: bool = field(default=True, metadata={"help": "Re-weight from the trends (off: the prior weights throughout)."})
    format_penalty: float = field(default=1.0, metadata={"help": "Subtracted from an episode that ended on an invalid tool call."})
    call_cost: float = field(default=0.02, metadata={"help": "Subtracted per tool call, for efficiency."})

    def __post_init__(self) -> None:
        if not self.dimensions:
            raise ParameterError("the reward needs at least one dimension")
        if self.prior_weights is not None and len(self.prior_weights) != len(self.dimensions):
            raise ParameterError(f"{len(self.prior_weights)} prior weights for {len(self.dimensions)} dimensions")
        if self.horizon < 1 or not 0 <= self.ema_decay < 1 or self.weight_temperature <= 0:
            raise ParameterError("horizon must be >= 1, ema_decay in [0, 1), weight_temperature > 0")


@dataclass
class AllInOneConfig:
    """Options of ``tir-agent train allinone``; each field's help is its command-line help."""

    data: Path = field(metadata={"help": "Folder of clean training photos."})
    out: Path = field(metadata={"help": "Run folder: last.pt (resumable) and allinone.safetensors with its card."})
    minutes: float = field(default=20.0, metadata={"help": "Training time; the step count is fixed from the speed of the first steps."})
    steps: int | None = field(default=None, metadata={"help": "Training steps (instead of --minutes)."})
    batch_size: int = field(default=16, metadata={"help": "Crops per step."})
    patch: int = field(default=128, metadata={"help": "Side of the training crops."})
    lr: float = field(default=3e-4, metadata={"help": "Peak learning rate (cosine decay)."})
    init: Path | None = field(default=None, metadata={"help": "Start from these weights (a resunet of the same options)."})
    degradations: str = field(default="randomized", metadata={"help": "'randomized' (the training model) or 'protocol'."})
    single_ratio: float = field(default=0.25, metadata={"help": "Share of crops with a single degradation."})
    clean_ratio: float = field(default=0.1, metadata={"help": "Share of clean crops (the network must leave them alone)."})
    seed: int = field(default=0, metadata={"help": "Seed of the crops and degradations."})
    resume: bool = field(default=False, metadata={"help": "Continue from OUT/last.pt."})
