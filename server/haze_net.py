"""``hazenet``: dehazing by a network that sees the whole frame and inverts the scattering model.

Haze is a property of the scene, not of a patch: its density follows the depth of the
whole frame (usually growing towards the top) and the airlight is one colour for the whole
image. A network that restores 128-pixel crops sees neither, which is why the patch UNet
loses to the dark channel prior. This one looks at the whole frame at a fixed low
resolution, with the pixel coordinates and the dark channel (He et al.'s haze cue: the
local minimum over colours and a small window) as extra input channels, predicts a transmission
map and one airlight colour, and recovers ``J = (I - A) / t + A`` at full resolution after
refining the upsampled transmission with a guided filter (He et al.) so that its edges
follow the image's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HazeNetConfig:
    width: int = field(default=32, metadata={"help": "Channels at the network's input resolution; deeper levels have up to 4x."})
    size: int = field(default=128, metadata={"help": "Side of the square the whole frame is resized to for the estimate."})
    t_min: float = field(default=0.1, metadata={"help": "Lowest transmission the network can predict (limits noise amplification)."})

    scale = 1
    multiple_of = 1
    tile_size = None  # the estimate needs the whole frame
    supports_half = False


def conv_stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Two 3x3 convolutions with ReLUs, the first with ``stride``."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of (B, 3, H, W) images, (B, 1, H, W)."""
    return 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, separable, with reflect padding."""
    k = 2 * radius + 1
    x = F.avg_pool2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), (1, k), stride=1)
    return F.avg_pool2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), (k, 1), stride=1)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter, (B, 1, H, W) guide and source; differentiable."""
    mean_i, mean_p = box_filter(guide, radius), box_filter(src, radius)
    a = (box_filter(guide * src, radius) - mean_i * mean_p) / (box_filter(guide * guide, radius) - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    return box_filter(a, radius) * guide + box_filter(b, radius)


class HazeNet(nn.Module):
    """Whole-frame transmission and airlight estimate, then the scattering model inverted at full resolution."""

    def __init__(self, config: HazeNetConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        widths = [w, 2 * w, 4 * w, 4 * w, 4 * w]
        self.encoders = nn.ModuleList([conv_stage(6, widths[0], 1), *(conv_stage(a, b, 2) for a, b in zip(widths, widths[1:]))])
        self.context = nn.Sequential(nn.Linear(widths[-1], widths[-1]), nn.ReLU(inplace=True))
        self.airlight = nn.Linear(widths[-1], 3)
        self.decoders = nn.ModuleList(conv_stage(a + b, b, 1) for a, b in zip(widths[:0:-1], widths[-2:0:-1]))
        self.transmission = nn.Conv2d(widths[1], 1, 3, padding=1)
        # Start from mid-dense haze of a bright airlight, where the inversion's gradients are informative
        # (from A = 0.5 and t = 0.5 the easiest descent is to t = 1, the identity, where sigmoid saturates).
        nn.init.constant_(self.airlight.bias, 1.7)  # A = 0.85
        nn.init.zeros_(self.transmission.bias)  # t = 0.55

    def estimate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Transmission (B, 1, H, W) in [t_min, 1] and airlight (B, 3, 1, 1) for full-size hazy images."""
        b, _, h, w = x.shape
        s = self.config.size
        small = F.interpolate(x, size=(s, s), mode="area") if (h, w) != (s, s) else x
        ys, xs = torch.meshgrid(torch.linspace(0, 1, s, device=x.device), torch.linspace(0, 1, s, device=x.device), indexing="ij")
        dark = -F.max_pool2d(-small.amin(dim=1, keepdim=True), 5, stride=1, padding=2)
        y = torch.cat([small - 0.5, dark - 0.5, ys.expand(b, 1, s, s) - 0.5, xs.expand(b, 1, s, s) - 0.5], dim=1)
        skips = []
        for encoder in self.encoders:
            y = encoder(y)
            skips.append(y)
        context = self.context(y.mean(dim=(2, 3)))
        airlight = torch.sigmoid(self.airlight(context))[..., None, None]
        y = y + context[..., None, None]
        for decoder, skip in zip(self.decoders, reversed(skips[1:-1])):
            y = decoder(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], dim=1))
        t_min = self.config.t_min
        t = t_min + (1 - t_min) * torch.sigmoid(self.transmission(y))
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
        gray = luminance(x).contiguous()
        radius = max(2, min(h, w) // 20)
        return guided_filter(gray, t, radius, eps=1e-3).clamp(t_min, 1.0), airlight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        t, airlight = self.estimate(x)
        return ((x - airlight) / t + airlight).clamp(0, 1)

    def training_loss(self, degraded: torch.Tensor, clean: torch.Tensor, params: list[dict[str, Any]]) -> torch.Tensor:
        """L1 of the dehazed image, plus L1 of the airlight against the synthesis's (a grey level per image)."""
        t, airlight = self.estimate(degraded)
        restored = (degraded - airlight) / t + airlight
        target = torch.tensor([p["airlight"] for p in params], device=degraded.device).view(-1, 1, 1, 1)
        return F.l1_loss(restored, clean) + F.l1_loss(airlight, target.expand_as(airlight))
