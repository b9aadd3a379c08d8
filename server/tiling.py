"""Padding to a model's size requirements (``ModelDescriptor.padded``), and overlapping tiles for large inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def _ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1 inside; towards a side shared with another tile: 0 over a dead margin of overlap/4, then linear."""
    margin = overlap // 4
    width = max(1, overlap - margin)
    distance = np.arange(length, dtype=np.float32)
    weights = np.ones(length, np.float32)
    if ramp_start:
        weights = np.minimum(weights, np.clip((distance - margin + 1) / width, 0, 1))
    if ramp_end:
        weights = np.minimum(weights, np.clip((distance[::-1] - margin + 1) / width, 0, 1))
    return weights


def stitch(tiles: list[Tile], outputs: list[np.ndarray], height: int, width: int, scale: int, overlap: int) -> np.ndarray:
    """Blend tile outputs (each ``scale`` times its tile) into one ``scale*H x scale*W`` image.

    Tile borders that lie inside the image are the least reliable pixels (the model saw
    padding there), so they get no weight and blend in linearly across the overlap.
    """
    channels = outputs[0].shape[2]
    acc = np.zeros((height * scale, width * scale, channels), np.float32)
    weight = np.zeros((height * scale, width * scale, 1), np.float32)
    for t, out in zip(tiles, outputs):
        wy = _ramp(t.height * scale, overlap * scale, t.top > 0, t.top + t.height < height)
        wx = _ramp(t.width * scale, overlap * scale, t.left > 0, t.left + t.width < width)
        w = np.outer(wy, wx)[..., None]
        ys, xs = slice(t.top * scale, (t.top + t.height) * scale), slice(t.left * scale, (t.left + t.width) * scale)
        acc[ys, xs] += out * w
        weight[ys, xs] += w
    return acc / np.maximum(weight, 1e-8)
