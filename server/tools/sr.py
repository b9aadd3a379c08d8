"""Super-resolution (x2, x4): the output is larger than the input."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from PIL import Image
from pydantic import Field

from tiragent.server.registry import Cost, ToolParams, register_tool
from tiragent.tasks import Task


class Scale(ToolParams):
    scale: Literal[2, 4] = Field(4, description="Upscaling factor: the output is this many times larger on each side.")


def resize(image: np.ndarray, size: tuple[int, int], method: int) -> np.ndarray:
    return np.clip(cv2.resize(image, size, interpolation=method), 0, 1).astype(np.float32)


def bicubic_down(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased bicubic downscale (the same operator as the low-resolution degradation)."""
    return np.stack(
        [np.asarray(Image.fromarray(image[..., c], mode="F").resize(size, Image.Resampling.BICUBIC)) for c in range(3)], axis=2
    )


@register_tool(Task.SR, "lanczos", cost=Cost.LOW, params=Scale)
def lanczos(image: np.ndarray, p: Scale) -> np.ndarray:
    """Lanczos-4 interpolation (OpenCV): sharp, fast, no detail synthesis; the baseline upscaler."""
    h, w = image.shape[:2]
    return resize(image, (w * p.scale, h * p.scale), cv2.INTER_LANCZOS4)


class BackProjection(Scale):
    iterations: int = Field(10, ge=1, le=50, description="Back-projection iterations.")
    step: float = Field(1.0, ge=0.1, le=2.0, description="Correction step size.")


@register_tool(Task.SR, "backprojection", cost=Cost.LOW, params=BackProjection)
def backprojection(image: np.ndarray, p: BackProjection) -> np.ndarray:
    """Iterative back-projection (Irani and Peleg): starts from bicubic and corrects the estimate until its bicubic downscale matches the input. Sharper and more faithful than plain interpolation on bicubic-downscaled images; can add mild ringing."""
    h, w = image.shape[:2]
    estimate = resize(image, (w * p.scale, h * p.scale), cv2.INTER_CUBIC)
    for _ in range(p.iterations):
        error = image - bicubic_down(estimate, (w, h))
        estimate = estimate + p.step * resize(error, (w * p.scale, h * p.scale), cv2.INTER_CUBIC)
    return np.clip(estimate, 0, 1).astype(np.float32)
