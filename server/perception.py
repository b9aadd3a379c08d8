"""Which degradations an image carries, and how strong they are.

Two detectors share thirteen cheap image statistics (about 40 ms for 512x512):

- ``learned`` (opt-in, see docs/benchmarks/detector.md for why it is not yet the default): a small CNN over crops at the image's own
  resolution plus the statistics, trained on the randomized degradation model, calibrated, with a
  severity per degradation (``server/detector_net.py``, ``tir-agent train detector``);
- ``logistic``: eight logistic regressions on the statistics, fitted on the protocol's
  degradations of CBSD68 (``python -m tiragent.server.perception --train ../shared/data/clean/CBSD68``;
  ``server/data/detector.json``). No severities.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from skimage.restoration import estimate_sigma

from tiragent.errors import ParameterError
from tiragent.eval.randomized import anisotropy
from tiragent.server.tools.derain import StreakParams, detect_streaks
from tiragent.tasks import TASK_OF_DEGRADATION

FEATURES = [
    "log2_max_side",
    "noise_sigma",
    "flat_noise",
    "laplacian_log_var",
    "high_freq_ratio",
    "anisotropy",
    "blockiness",
    "mean_luma",
    "p95_luma",
    "dark_channel",
    "contrast",
    "saturation",
    "streak_coverage",
]


def _centre(image: np.ndarray, size: int = 384) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top : top + size, left : left + size]


def _blockiness(gray: np.ndarray) -> float:
    """Mean step across 8-pixel block boundaries over the mean step elsewhere (about 1 without JPEG)."""
    ratios = []
    for g in (gray, gray.T):
        diffs = np.abs(np.diff(g, axis=1))
        if diffs.shape[1] < 16:
            continue
        cols = np.arange(diffs.shape[1])
        boundary = diffs[:, cols % 8 == 7].mean()
        inside = diffs[:, cols % 8 != 7].mean()
        ratios.append(boundary / (inside + 1e-6))
    return float(np.mean(ratios)) if ratios else 1.0


def features(image: np.ndarray) -> np.ndarray:
    """The statistics named in ``FEATURES`` for one float RGB image."""
    h, w = image.shape[:2]
    view = _centre(image)
    gray = cv2.cvtColor(view, cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    blurred = cv2.GaussianBlur(gray, (0, 0), 2.0)
    local = cv2.blur(np.abs(lap), (8, 8))
    flat = np.abs(lap)[local <= np.quantile(local, 0.1)]
    hsv = cv2.cvtColor(view, cv2.COLOR_RGB2HSV)
    dark = cv2.erode(view.min(axis=2), np.ones((15, 15), np.uint8))
    _, streaks = detect_streaks(view, StreakParams())
    values = [
        math.log2(max(h, w)),
        float(estimate_sigma(gray)) * 255.0,
        float(flat.mean()) * 255.0 if flat.size else 0.0,
        math.log(float(lap.var()) + 1e-8),
        float(((gray - blurred) ** 2).mean() / (gray.var() + 1e-6)),
        anisotropy(gray),
        _blockiness(gray),
        float(gray.mean()),
        float(np.quantile(gray, 0.95)),
        float(dark.mean()),
        float(gray.std()),
        float(hsv[..., 1].mean()),
        float(streaks.mean()),
    ]
    # a flat image makes some ratios 0/0: a statistic that cannot be measured reads as zero, not as NaN
    return np.nan_to_num(np.asarray(values, np.float64), nan=0.0, posinf=0.0, neginf=0.0)


@lru_cache(maxsize=1)
def _model(path: str | None = None) -> dict:
    source = Path(path) if path else resources.files("tiragent.server") / "data" / "detector.json"
    return json.loads(Path(str(source)).read_text())


def expand(standardized: np.ndarray) -> np.ndarray:
    """Standardised statistics and their squares: lets a linear model carve two-sided regions."""
    return np.concatenate([standardized, standardized**2], axis=-1)


DETECTORS = ("auto", "learned", "logistic")
LEARNED_WEIGHTS = "detector_net.safetensors"


@dataclass(frozen=True)
class Detection:
    probabilities: dict[str, float]
    """Probability that each degradation is present, keyed by degradation name."""
    severity: dict[str, float]
    """Estimated strength of each degradation that has one (``detector_net.SEVERITIES``), meaningful where present."""
    detector: str


def learned_weights() -> Path:
    return Path(str(resources.files("tiragent.server") / "weights" / LEARNED_WEIGHTS))


@lru_cache(maxsize=4)
def _learned(path: str) -> Any:
    from tiragent.server.nets import load_net

    return load_net(path)


def analyse(image: np.ndarray, detector: str = "logistic", weights: str | Path | None = None) -> Detection:
    """Presence and severity of each degradation. ``auto``: the learned detector where its weights exist, else logistic."""
    if detector not in DETECTORS:
        raise ParameterError(f"unknown detector {detector!r}: {', '.join(DETECTORS)}")
    path = Path(weights) if weights is not None else learned_weights()
    if detector == "learned" or (detector == "auto" and (weights is not None or path.is_file())):
        from tiragent.server.detector_net import predict
        from tiragent.server.nets import WeightsError

        try:
            net = _learned(str(path))
        except WeightsError as err:
            if detector == "learned" or weights is not None:
                raise
            _warn_once(f"the shipped detector weights are unreadable ({err}); using the logistic detector")
        else:
            probabilities, severity = predict(net, image, features(image))
            return Detection(probabilities, severity, "learned")
    return Detection(detect(image), {}, "logistic")


@lru_cache(maxsize=8)
def _warn_once(message: str) -> None:
    logging.getLogger(__name__).warning(message)


def detect(image: np.ndarray, model_path: str | None = None) -> dict[str, float]:
    """Probability of each degradation (keyed by degradation name), by the logistic detector."""
    model = _model(model_path)
    x = expand((features(image) - np.asarray(model["mean"])) / np.asarray(model["std"]))
    out = {}
    for name, params in model["classifiers"].items():
        z = float(np.dot(params["weights"], x) + params["bias"])
        out[name] = 0.5 * (1.0 + math.tanh(0.5 * z))  # the logistic function, without exp's overflow on images far from the training set
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = l2 * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) / len(y) + reg @ w
        hess = (xb.T * (p * (1 - p))) @ xb / len(y) + reg
        w -= np.linalg.solve(hess, grad)
    return w[:-1], float(w[-1])


def training_set(clean_dir: Path, images: slice, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels from every protocol combination, every single degradation and the clean image."""
    from tqdm import tqdm

    from tiragent.eval.bench import all_combinations
    from tiragent.eval.degradations import degrade
    from tiragent.images import list_images, read_image

    configs = [()] + [(name,) for name in TASK_OF_DEGRADATION] + [combo for _, combo in all_combinations()]
    paths = list_images(clean_dir)[images]
    rows, labels = [], []
    for i, path in enumerate(tqdm(paths, desc="detector data", unit="img")):
        clean = read_image(path)
        for c, combo in enumerate(configs):
            for s in range(seeds):
                image, _ = degrade(clean, combo, seed=(i * 1000 + c) * 10 + s) if combo else (clean, [])
                rows.append(features(image))
                labels.append([name in combo for name in TASK_OF_DEGRADATION])
    return np.asarray(rows), np.asarray(labels, np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description="Fit the degradation detector on synthetic degradations of clean images.")
    parser.add_argument("--train", type=Path, required=True, help="folder of clean images")
    parser.add_argument("--images", type=int, default=34, help="use the first N images (the rest stay unseen)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "detector.json")
    args = parser.parse_args()
    x, y = training_set(args.train, slice(0, args.images), args.seeds)
    held_x, held_y = training_set(args.train, slice(args.images, None), 1)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-8
    xs, hs = expand((x - mean) / std), expand((held_x - mean) / std)
    classifiers = {}
    for j, name in enumerate(TASK_OF_DEGRADATION):
        w, b = fit_logistic(xs, y[:, j])
        acc = float((((xs @ w + b) > 0) == (y[:, j] > 0.5)).mean())
        held = float((((hs @ w + b) > 0) == (held_y[:, j] > 0.5)).mean())
        classifiers[name] = {"weights": w.round(6).tolist(), "bias": round(b, 6), "train_accuracy": round(acc, 4), "heldout_accuracy": round(held, 4)}
        print(f"{name:8s} accuracy: train {acc:.3f}, held-out images {held:.3f}")
    exact = float(((((hs @ np.array([c["weights"] for c in classifiers.values()]).T) + [c["bias"] for c in classifiers.values()]) > 0) == (held_y > 0.5)).all(axis=1).mean())
    print(f"held-out exact-set accuracy {exact:.3f} over {len(hs)} samples")
    model = {
        "features": FEATURES,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "classifiers": classifiers,
        "trained_on": f"{args.train.name}, first {args.images} images, {args.seeds} seeds per configuration, {len(x)} samples",
        "heldout": f"{args.train.name}, remaining images, 1 seed per configuration, {len(hs)} samples; exact-set accuracy {exact:.4f}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(model, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
