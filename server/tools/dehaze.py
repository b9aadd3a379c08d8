"""Dehazing by inverting the scattering model I = J t + A (1 - t) with two different priors."""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from tiragent.eval.degradations import guided_filter
from tiragent.server.registry import Cost, ToolParams, register_tool
from tiragent.tasks import Task


def dark_channel(image: np.ndarray, patch: int) -> np.ndarray:
    return cv2.erode(image.min(axis=2), np.ones((patch, patch), np.uint8))


def atmospheric_light(image: np.ndarray, haze_map: np.ndarray) -> np.ndarray:
    """Mean colour of the brightest 0.1% of the haze map (He et al.)."""
    flat = haze_map.ravel()
    count = max(1, flat.size // 1000)
    idx = np.argpartition(flat, -count)[-count:]
    return image.reshape(-1, 3)[idx].mean(axis=0)


def recover(image: np.ndarray, transmission: np.ndarray, airlight: np.ndarray, t_min: float) -> np.ndarray:
    t = np.clip(transmission, t_min, 1.0)[..., None]
    return np.clip((image - airlight) / t + airlight, 0, 1).astype(np.float32)


class DCPParams(ToolParams):
    omega: float = Field(0.95, ge=0.5, le=1.0, description="Fraction of haze removed; below 1 keeps some for depth cues.")
    patch: int = Field(15, ge=3, le=51, description="Dark-channel patch size in pixels.")
    t_min: float = Field(0.1, ge=0.01, le=0.9, description="Lower bound on transmission (limits noise amplification).")


@register_tool(Task.DEHAZE, "dcp", cost=Cost.LOW, params=DCPParams)
def dcp(image: np.ndarray, p: DCPParams) -> np.ndarray:
    """Dark channel prior (He et al. 2009) with guided-filter refinement: strong on outdoor haze; can over-saturate sky and bright white regions."""
    airlight = atmospheric_light(image, dark_channel(image, p.patch))
    normalised = image / np.maximum(airlight, 1e-3)
    transmission = 1.0 - p.omega * dark_channel(normalised.astype(np.float32), p.patch)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    transmission = guided_filter(gray, transmission.astype(np.float32), radius=max(8, p.patch * 3), eps=1e-3)
    return recover(image, transmission, airlight, p.t_min)


class CAPParams(ToolParams):
    beta: float = Field(1.0, ge=0.1, le=3.0, description="Scattering coefficient: larger removes more haze.")
    t_min: float = Field(0.1, ge=0.01, le=0.9, description="Lower bound on transmission.")


@register_tool(Task.DEHAZE, "cap", cost=Cost.LOW, params=CAPParams)
def cap(image: np.ndarray, p: CAPParams) -> np.ndarray:
    """Colour attenuation prior (Zhu et al. 2015): depth grows with brightness minus saturation, fitted by their linear model. Gentler than the dark channel prior; keeps skies natural, removes less dense haze."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    depth = 0.121779 + 0.959710 * hsv[..., 2] - 0.780245 * hsv[..., 1]
    depth = cv2.erode(depth, np.ones((15, 15), np.uint8))
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    depth = guided_filter(gray, depth.astype(np.float32), radius=30, eps=1e-3)
    airlight = atmospheric_light(image, depth)
    return recover(image, np.exp(-p.beta * depth), airlight, p.t_min)
