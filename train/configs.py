"""The options of the policy-training commands, as dataclasses whose field help is the command-line help.

Kept apart from the code that runs them, so that building the CLI's parser imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tiragent.errors import TirAgentError

if TYPE_CHECKING:
    from tiragent.agent.conversation import ViewConfig


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
    degradations: str = field(default="protocol", metadata={"help": "Where degradations come from: 'protocol' (the benchmark's)."})
    single_ratio: float = field(default=0.25, metadata={"help": "Share of images with a single degradation."})
    clean_ratio: float = field(default=0.1, metadata={"help": "Share of clean images (the right answer is STOP at once)."})
    shuffle_ratio: float = field(default=0.5, metadata={"help": "Chance that a trajectory of two or more steps gets a shuffled-order twin."})
    substitute_ratio: float = field(default=0.5, metadata={"help": "Chance that a trajectory gets a twin with one tool replaced."})
    whole_view: int = field(default=256, metadata={"help": "Longest side of the whole-image view the policy sees."})
    crop_view: int = field(default=128, metadata={"help": "Side of the native-resolution crop shown beside it (0: none)."})
    short_prompt: bool = field(default=False, metadata={"help": "Short system prompt and tool list, for small policies."})
    device: str = field(default="auto", metadata={"help": "Device of the stdio server this starts."})

    def __post_init__(self) -> None:
        if self.degradations != "protocol":
            raise TirAgentError(f"unknown degradation source {self.degradations!r}: 'protocol' is the one there is")
        if not 0 <= self.single_ratio + self.clean_ratio <= 1:
            raise TirAgentError("single_ratio + clean_ratio must lie in [0, 1]")

    @property
    def views(self) -> ViewConfig:
        from tiragent.agent.conversation import ViewConfig

        return ViewConfig(whole=self.whole_view, crop=self.crop_view, short_prompt=self.short_prompt)


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
