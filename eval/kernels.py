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
    taps, weights = one_sided_taps(radius, sigma)
    if centered:
        taps = np.concatenate([-taps[:0:-1], taps])
        weights = np.concatenate([weights[:0:-1], weights])
    return line_kernel(taps, weights, angle, size=2 * (2 * radius + 1) + 1).astype(np.float32)


def one_sided_taps(radius: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets 0 .. 2 * radius along the blur axis and their one-sided Gaussian weights (``motion_kernel``'s trail)."""
    taps = np.arange(2 * radius + 1, dtype=np.float64)
    return taps, np.exp(-(taps**2) / (2.0 * sigma**2))


LINE_PROFILES = ("box", "gaussian", "one_sided")
"""Profiles of a straight motion trail of ``length`` pixels: uniform speed, a centred Gaussian, a one-sided Gaussian."""


def line_taps(profile: str, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (pixels along the blur axis) and weights of a straight trail of the given profile and length."""
    if profile == "one_sided":
        return one_sided_taps(max(1, length // 2), max(1.0, length / 4))
    offsets = np.linspace(-(length - 1) / 2, (length - 1) / 2, length)
    if profile == "box":
        return offsets, np.ones(length)
    if profile == "gaussian":
        return offsets, np.exp(-(np.linspace(-1, 1, length) ** 2) / (2 * 0.45**2))
    raise ValueError(f"unknown line profile {profile!r}; profiles: {', '.join(LINE_PROFILES)}")


def taps_spread(offsets: np.ndarray, weights: np.ndarray) -> float:
    """Standard deviation (pixels) of a trail's weights along its axis: one measure of blur length for every profile."""
    w = weights / weights.sum()
    mean = float((w * offsets).sum())
    return math.sqrt(float((w * (offsets - mean) ** 2).sum()))


def line_kernel(offsets: np.ndarray, weights: np.ndarray, angle: float, size: int | None = None) -> np.ndarray:
    """Taps ``weights`` at ``offsets`` pixels from the centre along ``angle`` degrees (counter-clockwise from the x
    axis), splatted bilinearly into a normalised float64 kernel of side ``size`` (default: just large enough)."""
    if size is None:
        size = 2 * int(math.ceil(float(np.abs(offsets).max()))) + 3
    centre = size // 2
    theta = math.radians(angle)
    kernel = np.zeros((size, size), np.float64)
    for t, w in zip(offsets, weights):
        x, y = centre + t * math.cos(theta), centre - t * math.sin(theta)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for yy, xx, share in ((y0, x0, (1 - fx) * (1 - fy)), (y0, x0 + 1, fx * (1 - fy)), (y0 + 1, x0, (1 - fx) * fy), (y0 + 1, x0 + 1, fx * fy)):
            if 0 <= yy < size and 0 <= xx < size:
                kernel[yy, xx] += w * share
    return kernel / kernel.sum()


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
