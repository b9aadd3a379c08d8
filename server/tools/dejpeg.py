"""JPEG-artefact removal: blocking at 8x8 boundaries and ringing/colour bleeding inside blocks."""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from tiragent.server.registry import Cost, ToolParams, register_tool
from tiragent.tasks import Task


def smooth_chroma(ycc: np.ndarray, diameter: int, sigma_color: float, sigma_space: float) -> None:
    """Bilateral-filter the two chroma planes of a YCrCb image in place."""
    for c in (1, 2):
        ycc[..., c] = cv2.bilateralFilter(np.ascontiguousarray(ycc[..., c]), diameter, sigma_color, sigma_space)


class DeblockParams(ToolParams):
    strength: float = Field(0.15, ge=0.0, le=0.5, description="Largest step (0-1) across a block edge that is treated as an artefact and smoothed.")


def _deblock_axis(y: np.ndarray, strength: float) -> np.ndarray:
    """Smooth the 8x8 block edges along axis 1 where the step across the edge is small (an artefact, not an edge)."""
    out = y.copy()
    w = y.shape[1]
    for edge in range(8, w - 1, 8):
        a, b = y[:, edge - 2], y[:, edge - 1]
        c, d = y[:, edge], y[:, edge + 1]
        step = c - b
        artefact = (np.abs(step) < strength) & (np.abs(b - a) < strength / 2) & (np.abs(d - c) < strength / 2)
        delta = np.where(artefact, step / 4.0, 0.0)
        out[:, edge - 2] = a + delta / 2
        out[:, edge - 1] = b + delta
        out[:, edge] = c - delta
        out[:, edge + 1] = d - delta / 2
    return out


@register_tool(Task.DEJPEG, "deblock", cost=Cost.LOW, params=DeblockParams)
def deblock(image: np.ndarray, p: DeblockParams) -> np.ndarray:
    """Adaptive deblocking filter in the style of video codecs: smooths 8x8 block boundaries where the step is too small to be a real edge, in luma and chroma, then smooths chroma (which JPEG subsamples). Fast; leaves ringing inside blocks."""
    ycc = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
    for c in range(3):
        channel = _deblock_axis(ycc[..., c], p.strength)
        ycc[..., c] = _deblock_axis(channel.T.copy(), p.strength).T
    smooth_chroma(ycc, 5, 0.05, 3)
    return np.clip(cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB), 0, 1).astype(np.float32)


class SmoothParams(ToolParams):
    sigma_color: float = Field(0.04, ge=0.005, le=0.5, description="Range sigma (0-1): intensity differences below this are smoothed.")
    diameter: int = Field(7, ge=3, le=15, description="Filter diameter in pixels.")


@register_tool(Task.DEJPEG, "bilateral", cost=Cost.LOW, params=SmoothParams)
def bilateral(image: np.ndarray, p: SmoothParams) -> np.ndarray:
    """Edge-preserving bilateral smoothing in YCbCr, stronger on chroma: removes both blocking and ringing at low JPEG quality, at some loss of fine texture."""
    ycc = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
    ycc[..., 0] = cv2.bilateralFilter(np.ascontiguousarray(ycc[..., 0]), p.diameter, p.sigma_color, p.diameter / 2)
    smooth_chroma(ycc, p.diameter + 4, p.sigma_color * 2, p.diameter)
    return np.clip(cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB), 0, 1).astype(np.float32)
