"""Rain-streak removal. Streaks are thin, bright, achromatic and long in one direction near
vertical; a pixel is rain when it is removed by a grey opening with a small disk (thin and
bright) and survives an opening with a line along some near-vertical direction (long)."""

from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import Field

from tiragent.images import to_uint8
from tiragent.server.registry import Cost, ToolParams, register_tool
from tiragent.tasks import Task


def line_element(length: int, degrees_from_vertical: float) -> np.ndarray:
    """A one-pixel-wide line structuring element."""
    element = np.zeros((length, length), np.uint8)
    centre = length // 2
    theta = math.radians(degrees_from_vertical)
    for s in np.linspace(-centre, centre, 4 * length):
        element[int(round(centre + s * math.cos(theta))), int(round(centre + s * math.sin(theta)))] = 1
    return element


class StreakParams(ToolParams):
    width: int = Field(7, ge=3, le=21, description="Disk diameter in pixels; must exceed the streak width.")
    length: int = Field(15, ge=5, le=41, description="Shortest streak length in pixels; shorter bright marks count as detail.")
    max_tilt: float = Field(30, ge=0, le=90, description="Largest streak angle from vertical in degrees.")
    threshold: float = Field(0.06, ge=0.0, le=0.5, description="Minimum brightness excess (0-1) of a streak pixel.")


def detect_streaks(image: np.ndarray, p: StreakParams) -> tuple[np.ndarray, np.ndarray]:
    """Returns (image opened by the disk, dilated uint8 streak mask)."""
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (p.width, p.width))
    opened = cv2.morphologyEx(image, cv2.MORPH_OPEN, disk)
    thin_bright = (image - opened).min(axis=2)  # rain raises every channel
    tilts = np.arange(-p.max_tilt, p.max_tilt + 1e-6, 10.0) if p.max_tilt > 0 else np.zeros(1)
    long_thin = np.max([cv2.morphologyEx(thin_bright, cv2.MORPH_OPEN, line_element(p.length, t)) for t in tilts], axis=0)
    mask = (long_thin > p.threshold).astype(np.uint8)
    return opened, cv2.dilate(mask, np.ones((3, 3), np.uint8))


@register_tool(Task.DERAIN, "opening", cost=Cost.LOW, params=StreakParams)
def opening(image: np.ndarray, p: StreakParams) -> np.ndarray:
    """Morphological de-raining: long, thin, bright near-vertical streaks are found by disk and line openings and replaced by the disk-opened image. Fast; slightly darkens fine bright texture under the streaks."""
    opened, mask = detect_streaks(image, p)
    return np.where(mask[..., None] > 0, opened, image).astype(np.float32)


class InpaintParams(StreakParams):
    radius: int = Field(3, ge=1, le=15, description="Inpainting neighbourhood radius in pixels.")


@register_tool(Task.DERAIN, "inpaint", cost=Cost.MEDIUM, params=InpaintParams)
def inpaint(image: np.ndarray, p: InpaintParams) -> np.ndarray:
    """Detect-and-inpaint de-raining: the same streak detector, then the streak pixels are filled from their surroundings by Telea's fast-marching inpainting (OpenCV). Keeps colours and texture around streaks better than the opening tool; slower."""
    _, mask = detect_streaks(image, p)
    if not mask.any():
        return image
    return cv2.inpaint(to_uint8(image), mask, p.radius, cv2.INPAINT_TELEA).astype(np.float32) / 255.0
