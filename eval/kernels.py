"""Blur kernels shared by the degradation synthesis and the deblurring tools."""

from __future__ import annotations

import math

import numpy as np


def disk_kernel(radius: float) -> np.ndarray:
    """A normalised, anti-aliased disk (defocus point-spread function) of the given radius in pixels."""
    if radius <= 0:
        return np.ones((1, 1), np.float32)
    half = int(math.ceil(radius))
    supersample = 8
    axis = (np.arange((2 * half + 1) * supersample) + 0.5) / supersample - (half + 0.5)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    inside = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    kernel = inside.reshape(2 * half + 1, supersample, 2 * half + 1, supersample).mean(axis=(1, 3))
    return (kernel / kernel.sum()).astype(np.float32)


def motion_kernel(radius: int, sigma: float, angle: float, *, centered: bool = False) -> np.ndarray:
    """A linear motion-blur kernel.

    With ``centered=False`` it follows ImageMagick's ``-motion-blur radius x sigma + angle``
    (the protocol's operator): ``2 * radius + 1`` taps along the angle, starting at the
    pixel itself, weighted by a one-sided Gaussian of ``sigma``; the blur trails in one
    direction. With ``centered=True`` the taps are mirrored around the centre (a symmetric
    line kernel, what a deblurring tool assumes when it cannot tell the direction).
    Angles are in degrees, counter-clockwise from the x axis.
    """
    taps = np.arange(2 * radius + 1, dtype=np.float64)
    weights = np.exp(-(taps**2) / (2.0 * sigma**2))
    if centered:
        taps = np.concatenate([-taps[:0:-1], taps])
        weights = np.concatenate([weights[:0:-1], weights])
    theta = math.radians(angle)
    dx, dy = taps * math.cos(theta), -taps * math.sin(theta)
    size = 2 * (2 * radius + 1) + 1
    centre = size // 2
    kernel = np.zeros((size, size), np.float64)
    # Bilinear splatting puts each tap at its sub-pixel position.
    for x, y, w in zip(dx + centre, dy + centre, weights):
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for yy, xx, share in ((y0, x0, (1 - fx) * (1 - fy)), (y0, x0 + 1, fx * (1 - fy)), (y0 + 1, x0, (1 - fx) * fy), (y0 + 1, x0 + 1, fx * fy)):
            if 0 <= yy < size and 0 <= xx < size:
                kernel[yy, xx] += w * share
    return (kernel / kernel.sum()).astype(np.float32)


def levin_kernels(path: str) -> list[np.ndarray]:
    """The eight real camera-shake kernels of Levin et al. (2009), from KAIR's ``Levin09.mat`` (MATLAB v7.3; needs h5py).

    For evaluation only: they were recorded from real hand shake, so no synthesis of ours matches them.
    """
    try:
        import h5py
    except ImportError:
        raise ImportError("reading Levin09.mat needs h5py: pip install 'tir-agent[bench]'") from None
    with h5py.File(path, "r") as f:
        kernels = [np.array(f[ref]).T for ref in f["kernels"][:, 0]]
    return [(k / k.sum()).astype(np.float32) for k in kernels]
