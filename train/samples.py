"""Training images for the policy: which clean crop, which degradations, which seed; shared by gen-sft and RL.

A sample is a pure function of a seed, so a run (and its resume) makes the same images: a random
crop of a clean photo degraded with one of the benchmark protocol's 16 combinations, a single
degradation, or nothing (so that the policy learns to stop at once); or a camera-native photo
(``eval.randomized.camera_native``), clean or with mild camera noise, so that the policy learns what a
real photo that needs little or nothing looks like.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiragent.eval.bench import all_combinations
from tiragent.eval.degradations import degrade, get_degradation
from tiragent.eval.randomized import camera_file, camera_native, camera_noise
from tiragent.images import read_image


@dataclass(frozen=True)
class Sample:
    """One training image: where it came from and what was done to it."""

    index: int
    source: str
    combination: tuple[str, ...]
    seed: int
    camera: bool = False
    """A camera-native photo: smooth at pixel scale, its own JPEG; clean or with camera noise (``combination``)."""

    @property
    def tasks(self) -> list[str]:
        """The tasks that undo its degradations."""
        return [get_degradation(d).task for d in self.combination]


def plan(count: int, sources: list[Path], *, seed: int, single_ratio: float, clean_ratio: float, camera_ratio: float = 0.0) -> list[Sample]:
    """``count`` samples, a pure function of the arguments: the same seed, the same images.

    ``camera_ratio``: the share of camera-native photos, half of them clean and half with camera noise. They are drawn
    from a stream of their own and take the place of the samples at their indices, so every other index keeps the
    sample a plan without them has (an earlier run's searches stay reusable: gen-sft's ``--reuse_search``)."""
    rng, camera_rng = random.Random(seed), random.Random(f"camera-{seed}")
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
        sample = Sample(i, sources[rng.randrange(len(sources))].name, combination, rng.randrange(2**31))
        if camera_ratio > 0 and camera_rng.random() < camera_ratio:
            noisy = camera_rng.random() < 0.5
            sample = Sample(i, sources[camera_rng.randrange(len(sources))].name, ("noise",) if noisy else (), camera_rng.randrange(2**31), camera=True)
        samples.append(sample)
    return samples


def make_pair(sample: Sample, folder: Path, crop: int, model: str = "protocol") -> tuple[np.ndarray, np.ndarray]:
    """The degraded image and its clean crop; ``model``: the benchmark protocol's degradations or the randomized
    training model (``tiragent.eval.degradations.MODELS``)."""
    degraded, clean, _ = make_pair_in_context(sample, folder, crop, model)
    return degraded, clean


def make_pair_in_context(
    sample: Sample, folder: Path, crop: int, model: str = "protocol", context: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``make_pair``'s two images, and the window of side ``context`` around the crop (clipped to the photo) degraded
    with the same draws: the same scene and degradations at a larger size, which a detector reads as it reads a photo
    of test size (None when ``context`` is no larger than the crop). The crop's images do not depend on ``context``."""
    photo = read_image(Path(folder) / sample.source)
    rng = np.random.default_rng(sample.seed)
    if sample.camera:
        photo, _ = camera_native(photo, rng)
    h, w = photo.shape[:2]
    side = min(crop, h, w)
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    clean = np.ascontiguousarray(photo[top : top + side, left : left + side])
    big = min(context, h, w)
    if big <= side:
        return _degraded(sample, clean, rng, model), clean, None
    y = min(max(0, top + side // 2 - big // 2), h - big)
    x = min(max(0, left + side // 2 - big // 2), w - big)
    window = np.ascontiguousarray(photo[y : y + big, x : x + big])
    same = copy.deepcopy(rng)  # the window meets the draws the crop meets
    return _degraded(sample, clean, rng, model), clean, _degraded(sample, window, same, model)


def _degraded(sample: Sample, clean: np.ndarray, rng: np.random.Generator, model: str) -> np.ndarray:
    if sample.camera:
        degraded, _ = degrade(clean, list(sample.combination), seed=sample.seed, params={"noise": camera_noise(rng)}, model="randomized")
        return camera_file(degraded, rng)[0] if rng.random() < 0.7 else degraded
    return degrade(clean, list(sample.combination), seed=sample.seed, model=model)[0] if sample.combination else clean
