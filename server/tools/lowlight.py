"""Low-light enhancement."""

from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import Field

from tiragent.eval.degradations import guided_filter
from tiragent.server.registry import Cost, ToolParams, register_tool
from tiragent.tasks import Task


class GammaParams(ToolParams):
    target_mean: float = Field(0.45, ge=0.1, le=0.8, description="Mean brightness (0-1) that the automatic gamma aims for.")
    gamma: float | None = Field(None, ge=0.1, le=1.0, description="Fixed exponent applied as I ** gamma; omit to choose it from target_mean.")


@register_tool(Task.LOWLIGHT, "gamma", cost=Cost.LOW, params=GammaParams)
def gamma(image: np.ndarray, p: GammaParams) -> np.ndarray:
    """Global gamma correction, by default choosing the exponent that brings the mean luminance to a target. Exact inverse of gamma darkening; washes out images darkened by a shift or a scaling."""
    if p.gamma is not None:
        exponent = p.gamma
    else:
        mean = float(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean())
        exponent = math.log(p.target_mean) / math.log(min(max(mean, 1e-3), 0.999))
        exponent = float(np.clip(exponent, 0.1, 1.0))
    return np.power(np.clip(image, 0, 1), exponent).astype(np.float32)


class ClaheParams(ToolParams):
    clip_limit: float = Field(2.0, ge=0.5, le=10.0, description="CLAHE contrast limit.")
    tiles: int = Field(8, ge=2, le=32, description="Tiles per side of the CLAHE grid.")


@register_tool(Task.LOWLIGHT, "clahe", cost=Cost.LOW, params=ClaheParams)
def clahe(image: np.ndarray, p: ClaheParams) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of the L channel in Lab (OpenCV): local contrast and brightness, colours kept. Can amplify noise in flat dark areas."""
    lab = cv2.cvtColor((np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=p.clip_limit, tileGridSize=(p.tiles, p.tiles)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32) / 255.0


class RetinexParams(ToolParams):
    strength: float = Field(0.6, ge=0.1, le=1.0, description="Gamma applied to the illumination map: smaller brightens more.")
    radius: int = Field(15, ge=2, le=64, description="Guided-filter radius of the illumination estimate.")


@register_tool(Task.LOWLIGHT, "retinex", cost=Cost.LOW, params=RetinexParams)
def retinex(image: np.ndarray, p: RetinexParams) -> np.ndarray:
    """Retinex-style illumination correction in the manner of LIME: estimates illumination as the max over colour channels, refines it with a guided filter, and divides out a gamma-compressed version of it. Brightens dark regions more than bright ones."""
    illumination = image.max(axis=2)
    illumination = np.clip(guided_filter(illumination, illumination, p.radius, 1e-3), 1e-3, 1.0)
    corrected = image / illumination[..., None] * np.power(illumination, p.strength)[..., None]
    return np.clip(corrected, 0, 1).astype(np.float32)
