"""The soak's test-only tools, in a module of their own so that isolated ones can run in worker processes
(which import them by name: benchmarks/ is on their PYTHONPATH)."""

from __future__ import annotations

import time

import numpy as np


def hang(image: np.ndarray, params: object) -> np.ndarray:
    """Soak tool: hangs past its timeout."""
    time.sleep(8)
    return image


def fail(image: np.ndarray, params: object) -> np.ndarray:
    """Soak tool: raises."""
    raise RuntimeError("the soak's failing tool failed, as it should")


def slow(image: np.ndarray, params: object) -> np.ndarray:
    """Soak tool: takes a second (for disconnects and bursts)."""
    time.sleep(1.0)
    return image * 0.9
