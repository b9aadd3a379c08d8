from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from skimage.transform import resize

from tiragent.images import to_uint8


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A natural photo that scikit-image ships (public domain), 128x128, float32 RGB."""
    return resize(data.astronaut(), (128, 128), anti_aliasing=True).astype(np.float32)


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    return resize(data.coffee(), (96, 144), anti_aliasing=True).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-12)))


def quantize(image: np.ndarray) -> np.ndarray:
    return to_uint8(image).astype(np.float32) / 255.0
