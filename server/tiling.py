"""Padding to a model's size requirements, and overlapping tiles for large inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def padded_size(size: int, multiple_of: int, min_size: int) -> int:
    size = max(size, min_size)
    return -(-size // multiple_of) * multiple_of


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad the bottom and right of an ``H x W x C`` image up to ``height x width``."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    return np.pad(image, ((0, height - h), (0, width - w), (0, 0)), mode="symmetric")


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Overlapping tiles of equal size covering the image; the last row and column align to the edges."""

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        stride = max(1, tile - overlap)
        points = list(range(0, length - tile, stride)) + [length - tile]
        return sorted(set(points))

    th, tw = min(tile, height), min(tile, width)
    return [Tile(top, left, th, tw) for top in starts(height) for left in starts(width)]


def _feather(height: int, width: int, overlap: int) -> np.ndarray:
    """Weights that ramp linearly over ``overlap`` pixels at each border (never zero)."""
    ramp = max(1, overlap)
    y = np.minimum(np.arange(height) + 1, np.arange(height)[::-1] + 1).clip(max=ramp) / ramp
    x = np.minimum(np.arange(width) + 1, np.arange(width)[::-1] + 1).clip(max=ramp) / ramp
    return np.outer(y, x).astype(np.float32)[..., None]


def stitch(tiles: list[Tile], outputs: list[np.ndarray], height: int, width: int, scale: int, overlap: int) -> np.ndarray:
    """Blend tile outputs (each ``scale`` times its tile) into one ``scale*H x scale*W`` image."""
    channels = outputs[0].shape[2]
    acc = np.zeros((height * scale, width * scale, channels), np.float32)
    weight = np.zeros((height * scale, width * scale, 1), np.float32)
    for t, out in zip(tiles, outputs):
        w = _feather(t.height * scale, t.width * scale, overlap * scale)
        ys, xs = slice(t.top * scale, (t.top + t.height) * scale), slice(t.left * scale, (t.left + t.width) * scale)
        acc[ys, xs] += out * w
        weight[ys, xs] += w
    return acc / np.maximum(weight, 1e-8)
