"""Training images for the policy: which clean crop, which degradations, which seed; shared by gen-sft and RL.

A sample is a pure function of a seed, so a run (and its resume) makes the same images: a random
crop of a clean photo degraded with one of the benchmark protocol's 16 combinations, a single
degradation, or nothing (so that the policy learns to stop at once).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiragent.eval.bench import all_combinations
from tiragent.eval.degradations import degrade, get_degradation
from tiragent.images import read_image


@dataclass(frozen=True)
class Sample:
    """One training image: where it came from and what was done to it."""

    index: int
    source: str
    combination: tuple[str, ...]
    seed: int

    @property
    def tasks(self) -> list[str]:
        """The tasks that undo its degradations."""
        return [get_degradation(d).task for d in self.combination]


def plan(count: int, sources: list[Path], *, seed: int, single_ratio: float, clean_ratio: float) -> list[Sample]:
    """``count`` samples, a pure function of the arguments: the same seed, the same images."""
    rng = random.Random(seed)
    combos = [combo for _, combo in all_combinations()]
    singles = sorted({name for combo in combos for name in combo})
    samples = []
    for i in range(count):
        draw = rng.random()
        if draw < clean_ratio:
            combination: tuple[str, ...] = ()
        elif draw < clean_ratio + single_ratio:
            combination = (rng.choice(singles),)
        else:
            combination = rng.choice(combos)
        samples.append(Sample(i, sources[rng.randrange(len(sources))].name, combination, rng.randrange(2**31)))
    return samples


def make_pair(sample: Sample, folder: Path, crop: int, model: str = "protocol") -> tuple[np.ndarray, np.ndarray]:
    """The degraded image and its clean crop; ``model``: the benchmark protocol's degradations or the randomized
    training model (``tiragent.eval.degradations.MODELS``)."""
    clean = read_image(Path(folder) / sample.source)
    rng = np.random.default_rng(sample.seed)
    h, w = clean.shape[:2]
    side = min(crop, h, w)
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    clean = np.ascontiguousarray(clean[top : top + side, left : left + side])
    degraded, _ = degrade(clean, list(sample.combination), seed=sample.seed, model=model) if sample.combination else (clean, [])
    return degraded, clean
