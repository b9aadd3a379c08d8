"""Denoising: non-local means, wavelet shrinkage, BM3D."""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field
from skimage.restoration import denoise_wavelet, estimate_sigma

from tiragent.images import to_uint8
from tiragent.server.registry import Cost, ToolParams, register_tool
from tiragent.tasks import Task


class NoiseLevel(ToolParams):
    sigma: float | None = Field(
        None, ge=0, le=100, description="Noise standard deviation on the 0-255 scale; omit to estimate it from the image."
    )


def noise_sigma(image: np.ndarray, sigma: float | None) -> float:
    """The given sigma (0-255 scale), or a wavelet-domain median estimate of it."""
    if sigma is not None:
        return float(sigma)
    return float(estimate_sigma(image, channel_axis=-1, average_sigmas=True)) * 255.0


@register_tool(Task.DENOISE, "nlm", cost=Cost.MEDIUM, params=NoiseLevel)
def nlm(image: np.ndarray, p: NoiseLevel) -> np.ndarray:
    """Non-local means (OpenCV): averages similar patches across the image. Good on Gaussian and mild Poisson noise, keeps edges, smooths fine texture at high noise. About 0.15 s for 512x512."""
    sigma = noise_sigma(image, p.sigma)
    if sigma < 0.5:
        return image
    h = float(np.clip(0.6 * sigma, 1.0, 60.0))
    out = cv2.fastNlMeansDenoisingColored(to_uint8(image), None, h, h, 7, 21)
    return out.astype(np.float32) / 255.0


@register_tool(Task.DENOISE, "wavelet", cost=Cost.LOW, params=NoiseLevel)
def wavelet(image: np.ndarray, p: NoiseLevel) -> np.ndarray:
    """Wavelet shrinkage (scikit-image, BayesShrink in YCbCr): fast and gentle; leaves some noise at high levels but rarely erases detail. About 40 ms for 512x512."""
    sigma = noise_sigma(image, p.sigma) / 255.0
    out = denoise_wavelet(image, sigma=sigma, channel_axis=-1, convert2ycbcr=True, method="BayesShrink", mode="soft", rescale_sigma=True)
    return np.clip(out, 0, 1).astype(np.float32)


# The bm3d library's native thread pool is process-wide: two calls at once abort the process
# (`ThreadPool::launchPool: Assertion _threads.empty()`). One at a time, in a worker process.
@register_tool(Task.DENOISE, "bm3d", cost=Cost.HIGH, params=NoiseLevel, concurrency=1, isolated=True)
def bm3d(image: np.ndarray, p: NoiseLevel) -> np.ndarray:
    """BM3D (the reference block-matching 3D filter): the strongest classical denoiser, best on Gaussian noise; slow, several seconds for 512x512."""
    import bm3d as bm3d_lib

    sigma = noise_sigma(image, p.sigma) / 255.0
    if sigma < 0.002:
        return image
    out = bm3d_lib.bm3d_rgb(image, sigma_psd=sigma)
    return np.clip(out, 0, 1).astype(np.float32)
