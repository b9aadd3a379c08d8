"""The learned degradation detector: which degradations an image carries, and how strong each is.

A small CNN looks at a few crops at the image's own resolution (noise, JPEG blocks and blur
live in the pixels, so nothing is resized), pools each layer's response into statistics, and
a head combines them with the perception module's 13 global image statistics. It predicts,
per degradation of the vocabulary, the probability that it is present (calibrated: one
temperature per degradation, fitted on held-out data) and, for five of them, a severity in
natural units. Trained by ``tir-agent train detector`` (``train/detector.py``) on the
randomized degradation model; the weights file carries its config and card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tiragent.tasks import TASK_OF_DEGRADATION

DEGRADATIONS = list(TASK_OF_DEGRADATION)


@dataclass(frozen=True)
class Severity:
    """A degradation's strength in natural units, mapped to [0, 1] for the network."""

    unit: str
    low: float
    high: float
    log: bool = False

    def encode(self, value: float) -> float:
        lo, hi, v = (math.log(self.low), math.log(self.high), math.log(max(value, 1e-6))) if self.log else (self.low, self.high, value)
        return float(np.clip((v - lo) / (hi - lo), 0.0, 1.0))

    def decode(self, y: float) -> float:
        y = float(np.clip(y, 0.0, 1.0))
        if self.log:
            return math.exp(math.log(self.low) + y * (math.log(self.high) - math.log(self.low)))
        return self.low + y * (self.high - self.low)


SEVERITIES: dict[str, Severity] = {
    "noise": Severity("sigma (of 255)", 1.0, 64.0, log=True),
    "motion": Severity("blur length (px)", 0.0, 40.0),
    "defocus": Severity("blur radius (px)", 0.0, 8.0),
    "jpeg": Severity("JPEG quality", 0.0, 100.0),
    "lowres": Severity("downscale factor", 1.0, 4.0, log=True),
}


def severity_of(degradation: str, params: dict) -> float | None:
    """The severity (natural units) of one applied degradation step, from either degradation model's parameters."""
    if degradation == "noise":  # the protocol's Poisson noise of scale s has, at mid-grey, sigma 255 s sqrt(0.5 / 256)
        return float(params["sigma"]) if "sigma" in params else 255.0 * float(params["scale"]) * math.sqrt(0.5 / 256)
    if degradation == "motion":  # the protocol's one-sided kernel of radius r spans about 2r
        return float(params["length"]) if "length" in params else 2.0 * float(params["radius"])
    if degradation == "defocus":
        return float(params["radius"])
    if degradation == "jpeg":
        return float(params["quality"])
    if degradation == "lowres":
        return float(params["scale"])
    return None


@dataclass
class DetectorNetConfig:
    width: int = field(default=32, metadata={"help": "Channels of the second layer; later layers have up to twice as many."})
    view: int = field(default=96, metadata={"help": "Side of each crop the CNN sees, at the image's own resolution."})
    stats: int = field(default=13, metadata={"help": "Global image statistics given to the head (perception.FEATURES)."})
    hidden: int = field(default=128, metadata={"help": "Width of the head's hidden layer."})
    max_pool: bool = field(
        default=False,
        metadata={"help": "Also pool each layer's maximum, beside its mean and spread: sparse patterns (rain streaks) move a maximum more than a mean."},
    )


class DetectorNet(nn.Module):
    """Crops ``B x K x 3 x V x V`` and statistics ``B x S`` to presence logits ``B x 8`` and severities ``B x 5`` in [0, 1]."""

    def __init__(self, config: DetectorNetConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        chans = [3, w // 2, w, w, 2 * w, 2 * w]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1) for i in range(5))
        pooled = (3 if config.max_pool else 2) * sum(chans[1:])
        self.stats_in = nn.Linear(config.stats, 32)
        self.head = nn.Sequential(nn.Linear(pooled + 32, config.hidden), nn.ReLU(), nn.Linear(config.hidden, len(DEGRADATIONS) + len(SEVERITIES)))
        self.register_buffer("stats_mean", torch.zeros(config.stats))
        self.register_buffer("stats_std", torch.ones(config.stats))
        self.register_buffer("temperature", torch.ones(len(DEGRADATIONS)))

    def forward(self, crops: torch.Tensor, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, k = crops.shape[:2]
        x = crops.flatten(0, 1)
        pooled = []
        for conv in self.convs:
            x = F.relu(conv(x))
            pooled += [x.mean(dim=(2, 3)), x.std(dim=(2, 3))] + ([x.amax(dim=(2, 3))] if self.config.max_pool else [])
        embedding = torch.cat(pooled, dim=1).view(b, k, -1).mean(dim=1)
        s = F.relu(self.stats_in((stats - self.stats_mean) / self.stats_std))
        out = self.head(torch.cat([embedding, s], dim=1))
        logits, severity = out[:, : len(DEGRADATIONS)], torch.sigmoid(out[:, len(DEGRADATIONS) :])
        return logits, severity


def views(image: np.ndarray, view: int, count: int = 5, rng: np.random.Generator | None = None) -> np.ndarray:
    """``count`` crops of ``view`` pixels: the four corners' quarters and the centre (``rng``: random ones instead).

    A side shorter than ``view`` is padded by reflection, so the pixels keep their own statistics.
    """
    h, w = image.shape[:2]
    if h < view or w < view:
        image = np.pad(image, ((0, max(0, view - h)), (0, max(0, view - w)), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
        h, w = image.shape[:2]
    if rng is not None:
        corners = [(int(rng.integers(0, h - view + 1)), int(rng.integers(0, w - view + 1))) for _ in range(count)]
    else:
        ys, xs = [(h - view) // 4, 3 * (h - view) // 4], [(w - view) // 4, 3 * (w - view) // 4]
        corners = [(y, x) for y in ys for x in xs][: max(0, count - 1)] + [((h - view) // 2, (w - view) // 2)]
    return np.stack([image[y : y + view, x : x + view] for y, x in corners])


@torch.inference_mode()
def predict(net: DetectorNet, image: np.ndarray, stats: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """Calibrated probability per degradation, and the severity (natural units) of the five that have one."""
    crops = torch.from_numpy(views(image, net.config.view)).permute(0, 3, 1, 2)[None].float()
    logits, severity = net(crops, torch.as_tensor(stats, dtype=torch.float32)[None])
    probabilities = torch.sigmoid(logits[0] / net.temperature).tolist()
    return (
        dict(zip(DEGRADATIONS, probabilities)),
        {name: spec.decode(y) for (name, spec), y in zip(SEVERITIES.items(), severity[0].tolist())},
    )
