"""``curvenet``: low-light enhancement by one tone curve that a network reads off the whole frame.

Under-exposure is a property of the exposure, not of a patch: a camera's gain, an exposure a few
stops short, a gamma or a black level shifted down all map every pixel through one monotone
curve, the same for the three colour channels. A patch network brightens each region by what it
sees there, so a dark object in a bright scene gets lifted too, and it can invent texture. This
one looks at the whole frame at a fixed low resolution, together with the cumulative histogram of
its luminance (the statistic a tone curve acts on), and predicts one monotone curve of ``knots``
points on [0, 1], applied to every channel of the full-resolution image by linear interpolation.
The curve cannot move an edge or add detail, and an estimate that is wrong is still a smooth,
order-preserving change of brightness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tiragent.server.haze_net import conv_stage, luminance


@dataclass(frozen=True)
class CurveNetConfig:
    width: int = field(default=24, metadata={"help": "Channels of the first stage; deeper stages have up to 4x."})
    size: int = field(default=128, metadata={"help": "Side of the square the whole frame is resized to for the estimate."})
    knots: int = field(default=65, metadata={"help": "Points of the tone curve, evenly spaced on [0, 1]."})
    bins: int = field(default=32, metadata={"help": "Bins of the luminance histogram given to the estimate (cumulative)."})

    scale = 1
    multiple_of = 1
    tile_size = None  # the curve is read off the whole frame
    supports_half = False


def cumulative_histogram(x: torch.Tensor, bins: int) -> torch.Tensor:
    """The share of each image's luminance at or below each of ``bins`` levels, (B, bins)."""
    index = (luminance(x).flatten(1) * bins).long().clamp(0, bins - 1)
    counts = torch.zeros(x.shape[0], bins, device=x.device).scatter_add_(1, index, torch.ones_like(index, dtype=torch.float32))
    return counts.cumsum(1) / index.shape[1]


def apply_curve(x: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Every value of (B, C, H, W) images mapped through its image's curve (B, K), linearly between the knots."""
    b, k = curve.shape
    position = x.clamp(0, 1).flatten(1) * (k - 1)
    left = position.floor().clamp(max=k - 2)
    frac = position - left
    left = left.long()
    y = curve.gather(1, left) * (1 - frac) + curve.gather(1, left + 1) * frac
    return y.view_as(x)


class CurveNet(nn.Module):
    """A whole-frame estimate of one monotone tone curve, applied to the full-resolution image."""

    def __init__(self, config: CurveNetConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        widths = [w, 2 * w, 4 * w, 4 * w, 4 * w]
        self.encoders = nn.Sequential(*(conv_stage(a, b, 2) for a, b in zip([4, *widths], widths)))
        hidden = 4 * w
        self.head = nn.Sequential(nn.Linear(2 * widths[-1] + config.bins, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, config.knots))
        # Start at the identity curve: a black level of 0 and equal steps of 1 / (knots - 1).
        step = 1.0 / (config.knots - 1)
        nn.init.normal_(self.head[-1].weight, std=1e-3)
        with torch.no_grad():
            self.head[-1].bias.fill_(math.log(math.expm1(step)))
            self.head[-1].bias[0] = -6.0

    def curve(self, x: torch.Tensor) -> torch.Tensor:
        """The tone curve (B, knots) of each full-size image: a black level, then non-negative steps (monotone)."""
        s = self.config.size
        small = F.interpolate(x, size=(s, s), mode="area") if x.shape[-2:] != (s, s) else x
        y = self.encoders(torch.cat([small - 0.5, luminance(small) - 0.5], dim=1))
        features = torch.cat([y.mean(dim=(2, 3)), y.amax(dim=(2, 3)), cumulative_histogram(small, self.config.bins)], dim=1)
        raw = self.head(features)
        black = 0.25 * torch.sigmoid(raw[:, :1])
        return torch.cat([black, black + F.softplus(raw[:, 1:]).cumsum(1)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return apply_curve(x, self.curve(x)).clamp(0, 1)

    def training_loss(self, degraded: torch.Tensor, clean: torch.Tensor, params: list[dict]) -> torch.Tensor:
        """L1 of the curve's output before clipping, so that a curve past 1 is pulled back instead of losing its gradient."""
        x = degraded.float()
        return F.l1_loss(apply_curve(x, self.curve(x)), clean)
