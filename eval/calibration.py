"""Whether a detector's probabilities mean what they say: reliability bins and expected calibration error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    count: int
    mean_probability: float
    frequency: float  # the share of positives among the predictions in the bin


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[Bin]:
    """Predictions (all degradations pooled) grouped by probability; a calibrated detector has frequency = probability."""
    p, y = np.asarray(probabilities, np.float64).ravel(), np.asarray(labels, np.float64).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        out.append(Bin(float(edges[b]), float(edges[b + 1]), n, float(p[inside].mean()) if n else float("nan"), float(y[inside].mean()) if n else float("nan")))
    return out


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Mean gap between probability and frequency over the bins, weighted by their counts."""
    table = reliability(probabilities, labels, bins)
    total = sum(b.count for b in table)
    return float(sum(b.count * abs(b.mean_probability - b.frequency) for b in table if b.count) / max(total, 1))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimises the log loss of sigmoid(logits / T) (a grid over 0.2-8, then refined)."""
    z, y = np.asarray(logits, np.float64), np.asarray(labels, np.float64)

    def loss(t: float) -> float:
        q = np.clip(1 / (1 + np.exp(-z / t)), 1e-7, 1 - 1e-7)
        return float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean())

    grid = np.exp(np.linspace(np.log(0.2), np.log(8.0), 80))
    best = grid[int(np.argmin([loss(t) for t in grid]))]
    fine = best * np.exp(np.linspace(-0.05, 0.05, 21))
    return float(fine[int(np.argmin([loss(t) for t in fine]))])


def presence_scores(probabilities: np.ndarray, labels: np.ndarray, names: list[str], threshold: float = 0.5) -> dict:
    """How well ``probabilities`` (samples x names) call presence at ``threshold``: the share of samples whose whole set is
    right, and per name accuracy, recall and false-alarm rate (None without positives or negatives), and the ECE."""
    p, truth = np.asarray(probabilities, np.float64), np.asarray(labels, np.float64) > 0.5
    guess = p > threshold

    def share(column: np.ndarray) -> float | None:
        return float(column.mean()) if column.size else None

    return {
        "exact": float((guess == truth).all(axis=1).mean()),
        "accuracy": {n: float((guess[:, j] == truth[:, j]).mean()) for j, n in enumerate(names)},
        "recall": {n: share(guess[truth[:, j], j]) for j, n in enumerate(names)},
        "false_alarm": {n: share(guess[~truth[:, j], j]) for j, n in enumerate(names)},
        "ece": expected_calibration_error(p, truth),
    }
