"""Degradations made by code this project did not write: albumentations 2.x, at the protocol's strengths.

For evaluation only (never for training): a learned part that only learned our own synthesis
(``eval/degradations.py``) shows it here. Each of the eight degradations has its own
implementation details: albumentations' motion kernels (a line with random direction and offset),
its defocus (a disk with alias blur), per-channel Gaussian noise, libjpeg through OpenCV, rain
drawn as lines and blurred, fog as overlapping blurred circles, gamma darkening, and OpenCV's
bicubic downscaling without anti-aliasing.

    from independent import degrade_independent   # (benchmarks/ on the path)
    image = degrade_independent(clean, "motion", seed=3)

Needs ``pip install 'tir-agent[bench]'`` (albumentations).
"""

from __future__ import annotations

import cv2
import numpy as np

PROTOCOL_STRENGTHS = {
    "motion": "line kernel of 9-21 px, the effective extent of the protocol's one-sided Gaussian taps (sigma 3-8)",
    "defocus": "disk radius 3-6 px",
    "noise": "Gaussian, sigma 20-50 of 255, per channel",
    "jpeg": "quality 10-29",
    "lowres": "x4, OpenCV bicubic without anti-aliasing",
    "rain": "drops 20-40 px long, slant -15..15",
    "haze": "fog coefficient 0.3-0.6",
    "dark": "gamma 1.5-2.2 (darkening)",
}


def _transform(name: str, height: int, width: int):  # noqa: ANN202 - an albumentations transform
    try:
        import albumentations as A
    except ImportError:
        raise SystemExit("the independent degradations need albumentations: pip install 'tir-agent[bench]'") from None
    return {
        "motion": lambda: A.MotionBlur(blur_limit=(9, 21), allow_shifted=True, p=1.0),
        "defocus": lambda: A.Defocus(radius=(3, 6), alias_blur=(0.1, 0.5), p=1.0),
        "noise": lambda: A.GaussNoise(std_range=(20 / 255, 50 / 255), per_channel=True, p=1.0),
        "jpeg": lambda: A.ImageCompression(quality_range=(10, 29), p=1.0),
        "lowres": lambda: A.Resize(height // 4, width // 4, interpolation=cv2.INTER_CUBIC, p=1.0),
        "rain": lambda: A.RandomRain(slant_range=(-15, 15), drop_length=30, drop_width=1, blur_value=3, brightness_coefficient=0.85, p=1.0),
        "haze": lambda: A.RandomFog(fog_coef_range=(0.3, 0.6), alpha_coef=0.1, p=1.0),
        "dark": lambda: A.RandomGamma(gamma_limit=(150, 220), p=1.0),
    }[name]()


def degrade_independent(image: np.ndarray, name: str, seed: int) -> np.ndarray:
    """``image`` (float32 RGB in [0, 1]) degraded by albumentations' implementation of ``name``, seeded."""
    import albumentations as A

    h, w = image.shape[:2]
    pipeline = A.Compose([_transform(name, h, w)], seed=seed)
    uint8 = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)  # albumentations' natural input, as a user would give it
    return (pipeline(image=uint8)["image"].astype(np.float32) / 255.0).clip(0, 1)


def synthesize_independent(image: np.ndarray, combination: tuple[str, ...], seed: int) -> tuple[np.ndarray, list[dict]]:
    """A benchmark input (``eval.bench.Synthesis``): ``combination`` applied in order by albumentations, each step seeded."""
    out, steps = image, []
    for k, name in enumerate(combination):
        step_seed = (seed + 1009 * k) % 2**32
        out = degrade_independent(out, name, seed=step_seed)
        steps.append({"name": name, "implementation": "albumentations", "seed": step_seed, "strength": PROTOCOL_STRENGTHS[name]})
    return out, steps
