"""Rain-streak removal: streaks are thin, bright and oriented, which two classical routes exploit."""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from tiragent.images import to_uint8
from tiragent.server.registry import Cost, Task, ToolParams, register_tool


def streak_residual(image: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey opening with a disk wider than a streak removes thin bright structures; returns (opened, residual)."""
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    opened = cv2.morphologyEx(image, cv2.MORPH_OPEN, se)
    return opened, image - opened


def streak_mask(image: np.ndarray, width: int, threshold: float) -> np.ndarray:
    """Pixels that belong to bright, elongated streaks (top-hat residual above threshold, in all channels)."""
    _, residual = streak_residual(image, width)
    brightness = residual.min(axis=2)  # rain is achromatic: it raises every channel
    mask = (brightness > threshold).astype(np.uint8)
    return cv2.dilate(mask, np.ones((3, 3), np.uint8))


class OpeningParams(ToolParams):
    width: int = Field(7, ge=3, le=21, description="Structuring-element diameter in pixels; must exceed the streak width.")
    threshold: float = Field(0.04, ge=0.0, le=0.5, description="Minimum brightness excess (0-1) for a pixel to count as rain.")


@register_tool(Task.DERAIN, "opening", cost=Cost.LOW, params=OpeningParams)
def opening(image: np.ndarray, p: OpeningParams) -> np.ndarray:
    """Morphological de-raining: pixels whose brightness excess over a grey opening exceeds a threshold in every channel are replaced by the opened value, then the seams are smoothed. Fast; also dims thin bright details such as specular lines."""
    opened, _ = streak_residual(image, p.width)
    mask = streak_mask(image, p.width, p.threshold).astype(np.float32)
    soft = cv2.GaussianBlur(mask, (0, 0), 1.0)[..., None]
    return (image * (1 - soft) + opened * soft).astype(np.float32)


class InpaintParams(ToolParams):
    width: int = Field(7, ge=3, le=21, description="Structuring-element diameter used to detect streaks.")
    threshold: float = Field(0.04, ge=0.0, le=0.5, description="Minimum brightness excess (0-1) for a pixel to count as rain.")
    radius: int = Field(3, ge=1, le=15, description="Inpainting neighbourhood radius in pixels.")


@register_tool(Task.DERAIN, "inpaint", cost=Cost.MEDIUM, params=InpaintParams)
def inpaint(image: np.ndarray, p: InpaintParams) -> np.ndarray:
    """Detect-and-inpaint de-raining: streak pixels found by a top-hat test are filled from their surroundings with Telea's fast-marching inpainting (OpenCV). Rebuilds texture under dense rain better than the opening tool, slower."""
    mask = streak_mask(image, p.width, p.threshold)
    if not mask.any():
        return image
    out = cv2.inpaint(to_uint8(image), mask, p.radius, cv2.INPAINT_TELEA)
    return out.astype(np.float32) / 255.0
