"""Image quality metrics on pyiqa, offline, with one "higher is better" scale for rewards.

``create_metric(name)`` returns a callable ``metric(image, reference=None) -> float`` on
float32 RGB arrays in [0, 1]. Every metric here works with no network: NIQE uses
parameters fitted by this project (see ``eval/fit_niqe.py``), never downloaded ones.
``normalized(name, value)`` maps any metric onto [0, 1], higher is better.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import cv2
import numpy as np

from tiragent.errors import ImageError, ToolNotFoundError, did_you_mean


@dataclass(frozen=True)
class MetricInfo:
    name: str
    pyiqa_name: str
    full_reference: bool
    lower_better: bool
    low: float
    high: float
    """``normalized`` maps [low, high] linearly onto [0, 1] (reversed when lower is better) and clips."""
    description: str
    options: tuple[tuple[str, Any], ...] = ()
    min_side: int = 8
    """Smallest image side the metric is defined for."""


METRICS: dict[str, MetricInfo] = {}


def register_metric(info: MetricInfo) -> MetricInfo:
    METRICS[info.name] = info
    return info


def niqe_params_path() -> str:
    return str(resources.files("tiragent.eval") / "data" / "niqe_cbsd68.mat")


register_metric(MetricInfo("psnr", "psnr", True, False, 10.0, 50.0, "Peak signal-to-noise ratio in dB on RGB."))
register_metric(MetricInfo("ssim", "ssim", True, False, 0.0, 1.0, "Structural similarity (on Y, as pyiqa computes it)."))
register_metric(MetricInfo("ms_ssim", "ms_ssim", True, False, 0.0, 1.0, "Multi-scale SSIM; needs at least 161 px per side.", min_side=161))
register_metric(MetricInfo("gmsd", "gmsd", True, True, 0.0, 0.35, "Gradient magnitude similarity deviation (0 = identical)."))
register_metric(MetricInfo("fsim", "fsim", True, False, 0.5, 1.0, "Feature similarity (phase congruency and gradients)."))
register_metric(MetricInfo("vif", "vif", True, False, 0.0, 1.0, "Visual information fidelity (1 = identical)."))
register_metric(MetricInfo("piqe", "piqe", False, True, 0.0, 100.0, "Perception-based image quality evaluator, no reference (0 = best).", min_side=16))
register_metric(
    MetricInfo(
        "niqe",
        "niqe",
        False,
        True,
        2.0,
        20.0,
        "Natural image quality evaluator, no reference; model fitted on CBSD68 by this project (lower is better).",
        options=(("pretrained_model_path", None),),
        min_side=96,
    )
)

FULL_REFERENCE = [m.name for m in METRICS.values() if m.full_reference]
NO_REFERENCE = [m.name for m in METRICS.values() if not m.full_reference]


def get_metric_info(name: str) -> MetricInfo:
    if name not in METRICS:
        raise ToolNotFoundError(f"unknown metric {name!r}: {did_you_mean(name, list(METRICS))}")
    return METRICS[name]


class Metric:
    """A pyiqa metric on float RGB arrays. Thread-safe (pyiqa modules are not re-entrant)."""

    def __init__(self, info: MetricInfo, device: str = "cpu") -> None:
        os.environ.setdefault("TORCH_HOME", os.path.expanduser("~/.cache/torch"))
        import pyiqa

        options = {k: (niqe_params_path() if k == "pretrained_model_path" and v is None else v) for k, v in info.options}
        self.info = info
        self.device = device
        self._model = pyiqa.create_metric(info.pyiqa_name, device=device, as_loss=False, **options)
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray, reference: np.ndarray | None = None) -> float:
        import torch

        if self.info.full_reference:
            if reference is None:
                raise ValueError(f"{self.info.name} is a full-reference metric: pass a reference image")
            if reference.shape != image.shape:
                raise ImageError(f"{self.info.name}: image {image.shape[:2]} and reference {reference.shape[:2]} differ in size")
        if min(image.shape[:2]) < self.info.min_side:
            raise ImageError(f"{self.info.name} needs at least {self.info.min_side} px per side, the image is {image.shape[1]}x{image.shape[0]}")
        # Images are [0, 1] by contract; clipping absorbs interpolation overshoot that pyiqa would reject.
        to_tensor = lambda a: torch.from_numpy(np.clip(a, 0, 1, dtype=np.float32)).permute(2, 0, 1)[None].to(self.device)  # noqa: E731
        try:
            with self._lock, torch.inference_mode():
                if self.info.full_reference:
                    value = self._model(to_tensor(image), to_tensor(reference))
                else:
                    value = self._model(to_tensor(image))
        except torch.linalg.LinAlgError as err:  # NIQE's covariance of a flat image is singular
            raise ImageError(f"{self.info.name} is undefined on this image (a flat or featureless image: {str(err).split(':')[0]})") from None
        return float(value.item())


_cache: dict[tuple[str, str], Metric] = {}
_cache_lock = threading.Lock()


def create_metric(name: str, device: str = "cpu") -> Metric:
    """The metric registered under ``name`` (cached: one instance per name and device)."""
    info = get_metric_info(name)
    with _cache_lock:
        if (name, device) not in _cache:
            _cache[(name, device)] = Metric(info, device)
        return _cache[(name, device)]


def normalized(name: str, value: float) -> float:
    """Map a metric value onto [0, 1] where higher is always better (for rewards).

    Linear between the metric's ``low`` and ``high`` (see the table in the README),
    reversed for lower-is-better metrics, clipped to [0, 1].
    """
    info = get_metric_info(name)
    score = (value - info.low) / (info.high - info.low)
    if info.lower_better:
        score = 1.0 - score
    return float(np.clip(score, 0.0, 1.0))


def mean_normalized(values: dict[str, float], names: tuple[str, ...] | list[str]) -> float:
    """The mean of the normalised values of ``names`` that ``values`` holds (a size may leave some undefined), or -inf."""
    present = [normalized(n, values[n]) for n in names if n in values]
    return sum(present) / len(present) if present else float("-inf")


def resized_to(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``image`` at the reference's size, for full-reference metrics: area interpolation down, bicubic up (clipped)."""
    if image.shape == reference.shape:
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > reference.shape[0] else cv2.INTER_CUBIC
    return np.clip(cv2.resize(image, (reference.shape[1], reference.shape[0]), interpolation=interpolation), 0, 1)


def evaluate(
    image: np.ndarray,
    reference: np.ndarray | None = None,
    names: list[str] | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """Several metrics at once: by default every no-reference one, plus every full-reference one when a reference is given.

    Metrics undefined at the image's size (MS-SSIM under 161 px, NIQE under 96 px) are left out.
    """
    if names is None:
        names = NO_REFERENCE + (FULL_REFERENCE if reference is not None else [])
    results = {}
    for name in names:
        if min(image.shape[:2]) < get_metric_info(name).min_side:
            continue
        metric = create_metric(name, device)
        results[name] = metric(image, reference if metric.info.full_reference else None)
    return results
