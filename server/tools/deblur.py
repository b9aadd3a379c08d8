"""Motion and defocus deblurring by non-blind deconvolution with an estimated kernel.

Kernel estimation: the motion axis is the direction of least gradient energy (the
smallest eigenvector of the structure tensor); the trail direction along it and the blur
size are chosen by ``choose_kernel`` (sparsest gradients after deconvolution).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import Field
from skimage.restoration import richardson_lucy

from tiragent.eval.kernels import disk_kernel
from tiragent.server.deconvolution import (
    analysis_view,
    choose_kernel,
    motion_candidates,
    to_gray,
    wiener_deconvolve,
)
from tiragent.server.registry import Cost, ToolParams, register_tool
from tiragent.tasks import Task


def rl_deconvolve(image: np.ndarray, kernel: np.ndarray, iterations: int) -> np.ndarray:
    """Richardson-Lucy deconvolution per channel, reflect-padded."""
    pad = max(kernel.shape) * 2
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])  # filter2D correlates; richardson_lucy convolves
    out = np.stack([richardson_lucy(padded[..., c], flipped, num_iter=iterations, clip=True) for c in range(3)], axis=2)
    return out[pad:-pad, pad:-pad].astype(np.float32)


def estimate_motion_angle(image: np.ndarray) -> float:
    """Blur axis in degrees (-90, 90]: the direction of least gradient energy (structure tensor)."""
    g = to_gray(image)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = -cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)  # y up, as angles are counter-clockwise
    tensor = np.array([[(gx * gx).mean(), (gx * gy).mean()], [(gx * gy).mean(), (gy * gy).mean()]])
    _, vectors = np.linalg.eigh(tensor)
    angle = math.degrees(math.atan2(vectors[1, 0], vectors[0, 0])) % 180.0
    return angle - 180.0 if angle > 90 else angle


class MotionKernel(ToolParams):
    sigma: float | None = Field(None, ge=0.5, le=15, description="Length scale of the motion trail in pixels (about a third of its visible length); omit to estimate it.")
    angle: float | None = Field(
        None, ge=-180, le=180, description="Direction of the trail in degrees, counter-clockwise from the +x axis; omit to estimate it."
    )


def motion_kernel_for(image: np.ndarray, p: MotionKernel) -> np.ndarray:
    """The given kernel, or the best candidate along the estimated axis (both trail directions, a range of lengths)."""
    view = analysis_view(image)
    angles = [p.angle] if p.angle is not None else [axis := estimate_motion_angle(view), axis + 180.0]
    sigmas = [p.sigma] if p.sigma is not None else [2, 3, 4, 5, 6, 8, 10]
    candidates = motion_candidates(angles, sigmas)
    return candidates[0][1] if len(candidates) == 1 else choose_kernel(view, candidates, nsr=0.005)


class WienerMotion(MotionKernel):
    nsr: float = Field(0.005, ge=1e-4, le=1.0, description="Noise-to-signal ratio: larger is smoother and rings less.")


@register_tool(Task.MOTION_DEBLUR, "wiener", cost=Cost.MEDIUM, params=WienerMotion)
def wiener_motion(image: np.ndarray, p: WienerMotion) -> np.ndarray:
    """Wiener deconvolution with a motion-trail kernel (direction and length estimated unless given). Fast; amplifies noise, so denoise first when the image is noisy."""
    return wiener_deconvolve(image, motion_kernel_for(image, p), p.nsr)


class RLMotion(MotionKernel):
    iterations: int = Field(20, ge=1, le=200, description="Richardson-Lucy iterations: more is sharper and noisier.")


@register_tool(Task.MOTION_DEBLUR, "richardson_lucy", cost=Cost.HIGH, params=RLMotion)
def rl_motion(image: np.ndarray, p: RLMotion) -> np.ndarray:
    """Richardson-Lucy deconvolution with a motion-trail kernel (estimated unless given). Iterative and positivity-preserving: fewer ringing artefacts than Wiener on bright edges, slower."""
    return rl_deconvolve(image, motion_kernel_for(image, p), p.iterations)


class DefocusKernel(ToolParams):
    radius: float | None = Field(None, ge=0.5, le=15, description="Defocus disk radius in pixels; omit to estimate it.")


def defocus_kernel_for(image: np.ndarray, p: DefocusKernel) -> np.ndarray:
    if p.radius is not None:
        return disk_kernel(p.radius)
    radii = (1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8)
    return choose_kernel(analysis_view(image), [(r, disk_kernel(r)) for r in radii], nsr=0.01)


class WienerDefocus(DefocusKernel):
    nsr: float = Field(0.01, ge=1e-4, le=1.0, description="Noise-to-signal ratio: larger is smoother and rings less.")


@register_tool(Task.DEFOCUS_DEBLUR, "wiener", cost=Cost.MEDIUM, params=WienerDefocus)
def wiener_defocus(image: np.ndarray, p: WienerDefocus) -> np.ndarray:
    """Wiener deconvolution with a disk (out-of-focus) kernel, radius estimated unless given. Fast; sensitive to noise and JPEG blocks."""
    return wiener_deconvolve(image, defocus_kernel_for(image, p), p.nsr)


class RLDefocus(DefocusKernel):
    iterations: int = Field(20, ge=1, le=200, description="Richardson-Lucy iterations: more is sharper and noisier.")


@register_tool(Task.DEFOCUS_DEBLUR, "richardson_lucy", cost=Cost.MEDIUM, params=RLDefocus)
def rl_defocus(image: np.ndarray, p: RLDefocus) -> np.ndarray:
    """Richardson-Lucy deconvolution with a disk kernel, radius estimated unless given. Slower than Wiener, fewer ringing artefacts."""
    return rl_deconvolve(image, defocus_kernel_for(image, p), p.iterations)
