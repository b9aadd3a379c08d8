"""``motionkernel``: a learned motion-blur kernel estimator in front of Wiener deconvolution.

Blind deconvolution succeeds or fails with its kernel: on McMaster, Wiener deconvolution
with the true kernel reaches about 40 dB where the structure-tensor estimate of the blur
axis (the classical tool) reaches 31, because textures with a dominant orientation pull the
axis estimate off by 5-20 degrees. The network estimates what is hard to estimate by hand,
the blur axis. Along that axis, the trail's direction and length are chosen as the
classical tool chooses them, by the sparsity of the deconvolved gradients (with the true
axis this reaches 39.4 dB on McMaster). That choice of length fails on 8-bit images blurred
by other code (it prefers too short a trail), so with ``spread`` a second branch also
estimates the trail's length and profile, and sparsity chooses only among trails near them.

The estimator is a small fully convolutional network on the image's normalised gradients,
so it reads any view size: every location votes for the axis with an unnormalised
``(cos 2a, sin 2a)`` vector, and the votes are averaged and normalised, as a structure
tensor pools gradients; flat regions vote near zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tiragent.eval.kernels import LINE_PROFILES, taps_spread
from tiragent.eval.randomized import motion_taps
from tiragent.server.deconvolution import analysis_view, central_window, choose_kernel, motion_candidates, spread_candidates, wiener_deconvolve


@dataclass(frozen=True)
class MotionKernelNetConfig:
    width: int = field(default=32, metadata={"help": "Channels at full resolution (twice as many at half resolution)."})
    view: int = field(default=384, metadata={"help": "Side of the central crop the estimate and the kernel choice look at (the blur is uniform over the frame)."})
    nsr: float = field(default=0.005, metadata={"help": "Noise-to-signal ratio of the Wiener deconvolution."})
    sigmas: tuple[float, ...] = field(default=(2, 3, 4, 5, 6, 8, 10), metadata={"help": "Trail length scales (pixels) that the sparsity choice tries along the estimated axis."})
    spread: bool = field(
        default=False,
        metadata={
            "help": "Also estimate the trail's length (the spread of its kernel along the axis) and profile (uniform, centred or one-sided), and "
            "deconvolve with that trail, choosing its direction and the multiple of the spread in spread_scales by sparsity (the sparsity choice over "
            "every length prefers too short a trail on 8-bit images)."
        },
    )
    spread_scales: tuple[float, ...] = field(
        default=(0.75, 0.87, 1.0, 1.15, 1.33), metadata={"help": "Multiples of the estimated spread that the sparsity choice tries (with spread)."}
    )

    scale = 1
    multiple_of = 1
    tile_size = None  # one kernel for the whole frame
    supports_half = False
    cpu_step = True  # the network estimates the axis on the device; the kernel choice and deconvolution run on a CPU thread


def normalised_gradients(x: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical differences of the grey image, divided by their RMS over the image.

    Blur lives in the gradients, whose scale (about 0.01) is small against the intensities a
    convolution's bias would otherwise compare them with (the network did not learn from the
    raw image); normalising also makes the estimate independent of contrast.
    """
    g = x.mean(dim=1, keepdim=True)
    grad = torch.cat([F.pad(g[..., :, 1:] - g[..., :, :-1], (0, 1)), F.pad(g[..., 1:, :] - g[..., :-1, :], (0, 0, 0, 1))], dim=1)
    return grad / (grad.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-4)


class MotionKernelNet(nn.Module):
    """Estimates the motion-blur axis, chooses the kernel along it, and deconvolves with it."""

    def __init__(self, config: MotionKernelNetConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            nn.Conv2d(2, w, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(inplace=True), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(2 * w, 2, 1)
        if config.spread:
            # A trail is up to 35 px long: three more halvings widen each location's view to about 40 px, then pooled over the view.
            halvings = [layer for _ in range(3) for layer in (nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(inplace=True))]
            self.spread_features = nn.Sequential(*halvings)
            self.spread_head = nn.Linear(2 * w, 1 + len(LINE_PROFILES))

    def read(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per image the unit vector ``(cos 2a, sin 2a)`` of the blur axis a, and with the length branch the log of
        the trail's spread in pixels followed by the logits of its profile (``LINE_PROFILES``); else None."""
        features = self.features(normalised_gradients(x))
        axis = F.normalize(self.head(features).mean(dim=(2, 3)), dim=1, eps=1e-6)
        if not self.config.spread:
            return axis, None
        return axis, self.spread_head(self.spread_features(features).mean(dim=(2, 3)))

    @torch.no_grad()
    def kernels(self, x: torch.Tensor) -> list[tuple[float, float, int]]:
        """Per image the blur axis in degrees in (-90, 90], the trail's spread in pixels and the index of its profile
        in ``LINE_PROFILES`` (0 and -1 without the length branch), from the central view."""
        rows, cols = central_window(*x.shape[-2:], self.config.view)
        axis, trail = self.read(x[..., rows, cols].float())
        spreads, profiles = ([0.0] * len(axis), [-1] * len(axis)) if trail is None else (trail[:, 0].exp().tolist(), trail[:, 1:].argmax(1).tolist())
        return [(math.degrees(math.atan2(float(s), float(c))) / 2, spread, profile) for (c, s), spread, profile in zip(axis, spreads, profiles)]

    def axes(self, x: torch.Tensor) -> list[float]:
        """Per image the blur axis in degrees in (-90, 90], from the central view."""
        return [axis for axis, _, _ in self.kernels(x)]

    def deblur(self, image: np.ndarray, axis: float, spread: float = 0.0, profile: str | None = None) -> np.ndarray:
        """Wiener deconvolution with the sparsest candidate kernel along ``axis``: trails of ``profile`` near ``spread``
        pixels where they are given (direction and multiple chosen), else trails of every length scale in ``sigmas``."""
        c = self.config
        if profile:
            candidates = [candidate for scale in c.spread_scales for candidate in spread_candidates(axis, spread * scale, profile)]
        else:
            candidates = motion_candidates([axis, axis + 180.0], list(c.sigmas))
        kernel = choose_kernel(analysis_view(image, c.view), candidates, nsr=c.nsr)
        return wiener_deconvolve(image, kernel, c.nsr)

    @torch.no_grad()
    def device_step(self, x: torch.Tensor) -> torch.Tensor:
        """The pool's device part: per image the blur axis in degrees, the trail's spread and profile, ``N x 3``."""
        return torch.tensor(self.kernels(x), dtype=torch.float32)

    def cpu_step(self, image: np.ndarray, estimate: np.ndarray) -> np.ndarray:
        """The pool's CPU part: the kernel along the estimated axis, and Wiener deconvolution (numpy)."""
        profile = int(estimate[2])
        return self.deblur(image, float(estimate[0]), float(estimate[1]), LINE_PROFILES[profile] if profile >= 0 else None)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.float().permute(0, 2, 3, 1).cpu().numpy()
        out = [self.cpu_step(np.ascontiguousarray(img), est) for img, est in zip(images, self.device_step(x).numpy())]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x)

    def training_loss(self, degraded: torch.Tensor, clean: torch.Tensor, params: list[dict[str, Any]]) -> torch.Tensor:
        """1 - cos(2 x axis error) against the angle the degradation used, plus with the length branch the absolute
        error of the log spread and the cross-entropy of the profile; over the straight trails only (a camera-shake
        path has neither axis nor length; the protocol's trail is one-sided)."""
        taps = [motion_taps(p) for p in params]
        line = torch.tensor([t is not None for t in taps], dtype=torch.float32, device=degraded.device)
        angle = torch.tensor([math.radians(2 * p["angle"]) for p in params], device=degraded.device)
        axis, trail = self.read(degraded)
        count = line.sum().clamp(min=1)
        loss = ((1 - (axis[:, 0] * torch.cos(angle) + axis[:, 1] * torch.sin(angle))) * line).sum() / count
        if trail is not None:
            spread = torch.tensor([math.log(taps_spread(*t)) if t is not None else 0.0 for t in taps], device=degraded.device)
            profile = torch.tensor([LINE_PROFILES.index(p.get("variant", "one_sided")) if t is not None else 0 for p, t in zip(params, taps)], device=degraded.device)
            errors = (trail[:, 0] - spread).abs() + F.cross_entropy(trail[:, 1:], profile, reduction="none")
            loss = loss + (errors * line).sum() / count
        return loss
