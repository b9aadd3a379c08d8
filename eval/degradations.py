"""The eight degradations of the AgenticIR / MiO100 protocol, seeded and reproducible.

Each degradation is one registered function ``f(image, rng, **params) -> (image, params)``:
parameters that are not given are sampled from ``rng`` within the protocol's ranges, and
the parameters actually used are returned so that a manifest can record them. Images are
float32 RGB in [0, 1]; the same seed gives the same pixels.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from tiragent.errors import ParameterError, ToolNotFoundError, did_you_mean
from tiragent.eval.kernels import disk_kernel, motion_kernel
from tiragent.images import to_uint8
from tiragent.tasks import DEGRADATION_OF_TASK, TASK_NAMES, TASK_OF_DEGRADATION, Task, is_task

Params = dict[str, Any]
DegradeFn = Callable[..., tuple[np.ndarray, Params]]


@dataclass(frozen=True)
class Degradation:
    name: str
    task: Task  # the restoration task that undoes it
    description: str
    fn: DegradeFn


DEGRADATIONS: dict[str, Degradation] = {}
ALIASES = {
    "low-res": "lowres", "low_res": "lowres", "lr": "lowres", "sr": "lowres",
    "low-light": "dark", "lowlight": "dark", "low_light": "dark",
    "motion_blur": "motion", "motion-blur": "motion",
    "defocus_blur": "defocus", "defocus-blur": "defocus",
    "compression": "jpeg", "jpg": "jpeg",
}


def register_degradation(name: str) -> Callable[[DegradeFn], DegradeFn]:
    """Register ``f(image, rng, **params)`` under a name of the vocabulary (``tiragent.tasks.TASK_OF_DEGRADATION``)."""
    if name not in TASK_OF_DEGRADATION:
        raise ValueError(f"degradation {name!r} is not in the vocabulary (tiragent.tasks.TASK_OF_DEGRADATION)")

    def decorator(fn: DegradeFn) -> DegradeFn:
        doc = (fn.__doc__ or "").strip().split("\n\n")[0]
        DEGRADATIONS[name] = Degradation(name=name, task=TASK_OF_DEGRADATION[name], description=" ".join(doc.split()), fn=fn)
        return fn

    return decorator


def degradation_for(task: str) -> Degradation:
    """The degradation that a restoration task undoes."""
    if not is_task(task):
        raise ToolNotFoundError(f"no degradation is undone by task {task!r}: {did_you_mean(str(task), list(TASK_NAMES))}")
    return DEGRADATIONS[DEGRADATION_OF_TASK[Task(task)]]


def get_degradation(name: str) -> Degradation:
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in DEGRADATIONS:
        raise ToolNotFoundError(f"unknown degradation {name!r}: {did_you_mean(name, list(DEGRADATIONS))}")
    return DEGRADATIONS[key]


def _pick(params: Params, key: str, sample: Callable[[], Any]) -> Any:
    value = params.get(key)
    return sample() if value is None else value


def _check(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise ParameterError(f"{name}={value} is out of range [{low}, {high}]")


@register_degradation("lowres")
def low_resolution(image: np.ndarray, rng: np.random.Generator, scale: int | None = None) -> tuple[np.ndarray, Params]:
    """Bicubic downscale by 1/4 (the image gets smaller)."""
    scale = int(_pick({"scale": scale}, "scale", lambda: 4))
    _check("scale", scale, 2, 8)
    h, w = image.shape[:2]
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    # PIL's bicubic filter widens its support when downscaling (anti-aliased, like MATLAB's imresize).
    channels = [np.asarray(Image.fromarray(image[..., c], mode="F").resize(size, Image.Resampling.BICUBIC)) for c in range(3)]
    return np.clip(np.stack(channels, axis=2), 0, 1).astype(np.float32), {"scale": scale}


@register_degradation("noise")
def noise(
    image: np.ndarray,
    rng: np.random.Generator,
    kind: str | None = None,
    sigma: float | None = None,
    scale: float | None = None,
) -> tuple[np.ndarray, Params]:
    """Gaussian noise with sigma in [20, 50] (0-255 scale), or Poisson noise with scale in [1, 3], chosen at random.

    Poisson noise follows the BasicSR / Real-ESRGAN convention: the image is treated as
    photon counts with ``2**ceil(log2(unique levels))`` levels, and the resulting noise is
    multiplied by ``scale``.
    """
    kind = _pick({"kind": kind}, "kind", lambda: str(rng.choice(["gaussian", "poisson"])))
    if kind == "gaussian":
        sigma = float(_pick({"sigma": sigma}, "sigma", lambda: rng.uniform(20, 50)))
        _check("sigma", sigma, 0, 255)
        out = image + rng.normal(0.0, sigma / 255.0, image.shape).astype(np.float32)
        return np.clip(out, 0, 1).astype(np.float32), {"kind": kind, "sigma": round(sigma, 4)}
    if kind == "poisson":
        scale = float(_pick({"scale": scale}, "scale", lambda: rng.uniform(1, 3)))
        _check("scale", scale, 0, 10)
        levels = 2 ** math.ceil(math.log2(max(2, len(np.unique(to_uint8(image))))))
        photons = rng.poisson(image.astype(np.float64) * levels) / levels
        out = image + (photons - image) * scale
        return np.clip(out, 0, 1).astype(np.float32), {"kind": kind, "scale": round(scale, 4)}
    raise ParameterError(f"noise kind must be 'gaussian' or 'poisson', not {kind!r}")


@register_degradation("jpeg")
def jpeg(image: np.ndarray, rng: np.random.Generator, quality: int | None = None) -> tuple[np.ndarray, Params]:
    """JPEG compression with quality 10-29 (4:2:0 chroma subsampling, as common encoders default to)."""
    quality = int(_pick({"quality": quality}, "quality", lambda: int(rng.integers(10, 30))))
    _check("quality", quality, 1, 100)
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="JPEG", quality=quality)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0
    return out, {"quality": quality}


@register_degradation("dark")
def dark(
    image: np.ndarray,
    rng: np.random.Generator,
    mode: str | None = None,
    shift: float | None = None,
    gamma: float | None = None,
    max_value: float | None = None,
) -> tuple[np.ndarray, Params]:
    """Low light: a brightness shift down by 30-49, gamma darkening with gamma 0.5-0.7, or rescaling the maximum to 100-149 (0-255 scale).

    Gamma darkening applies ``I ** (1 / gamma)``: the protocol names gammas below one and
    uses them to darken, so the exponent is their inverse.
    """
    mode = _pick({"mode": mode}, "mode", lambda: str(rng.choice(["shift", "gamma", "max"])))
    if mode == "shift":
        shift = float(_pick({"shift": shift}, "shift", lambda: float(rng.integers(30, 50))))
        _check("shift", shift, 0, 255)
        return np.clip(image - shift / 255.0, 0, 1).astype(np.float32), {"mode": mode, "shift": shift}
    if mode == "gamma":
        gamma = float(_pick({"gamma": gamma}, "gamma", lambda: rng.uniform(0.5, 0.7)))
        _check("gamma", gamma, 0.05, 1.0)
        return np.power(image, 1.0 / gamma).astype(np.float32), {"mode": mode, "gamma": round(gamma, 4)}
    if mode == "max":
        max_value = float(_pick({"max_value": max_value}, "max_value", lambda: float(rng.integers(100, 150))))
        _check("max_value", max_value, 1, 255)
        peak = max(float(image.max()), 1e-6)
        return (image * (max_value / 255.0) / peak).astype(np.float32), {"mode": mode, "max_value": max_value}
    raise ParameterError(f"dark mode must be 'shift', 'gamma' or 'max', not {mode!r}")


def estimate_depth(image: np.ndarray) -> np.ndarray:
    """A relative depth map in [0, 1] (1 = far) from image statistics alone, no learned model.

    Two cues, blended: the vertical position (in outdoor photos the top of the frame is
    usually farther away), and the colour attenuation prior of Zhu et al. (2015), whose
    ``brightness - saturation`` grows with distance. The blend is smoothed with a guided
    filter so that depth edges follow the image's edges.
    """
    h, w = image.shape[:2]
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    attenuation = hsv[..., 2] - hsv[..., 1]
    attenuation = cv2.GaussianBlur(attenuation, (0, 0), sigmaX=max(h, w) / 30)
    attenuation = (attenuation - attenuation.min()) / max(float(np.ptp(attenuation)), 1e-6)
    vertical = np.repeat(np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None], w, axis=1)
    depth = 0.6 * vertical + 0.4 * attenuation
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    depth = guided_filter(gray, depth.astype(np.float32), radius=max(4, min(h, w) // 20), eps=1e-3)
    return np.clip((depth - depth.min()) / max(float(np.ptp(depth)), 1e-6), 0, 1).astype(np.float32)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grayscale guide (box filters, O(1) per pixel)."""
    size = (2 * radius + 1, 2 * radius + 1)
    mean = lambda x: cv2.boxFilter(x, -1, size, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    mean_i, mean_p = mean(guide), mean(src)
    cov_ip = mean(guide * src) - mean_i * mean_p
    var_i = mean(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return mean(a) * guide + mean(b)


@register_degradation("haze")
def haze(
    image: np.ndarray,
    rng: np.random.Generator,
    airlight: float | None = None,
    beta: float | None = None,
) -> tuple[np.ndarray, Params]:
    """Haze by the atmospheric scattering model I = J t + A (1 - t), t = exp(-beta d), A in [0.7, 1.0], beta in [0.6, 1.8].

    The depth d comes from ``estimate_depth`` (position and colour-attenuation cues, no
    downloaded model).
    """
    airlight = float(_pick({"airlight": airlight}, "airlight", lambda: rng.uniform(0.7, 1.0)))
    beta = float(_pick({"beta": beta}, "beta", lambda: rng.uniform(0.6, 1.8)))
    _check("airlight", airlight, 0, 1)
    _check("beta", beta, 0, 10)
    t = np.exp(-beta * estimate_depth(image))[..., None]
    out = image * t + airlight * (1 - t)
    return np.clip(out, 0, 1).astype(np.float32), {"airlight": round(airlight, 4), "beta": round(beta, 4)}


MOTION_SETTINGS = ((10, 3.0), (15, 5.0), (15, 8.0))


@register_degradation("motion")
def motion_blur(
    image: np.ndarray,
    rng: np.random.Generator,
    radius: int | None = None,
    sigma: float | None = None,
    angle: float | None = None,
) -> tuple[np.ndarray, Params]:
    """Motion blur with (radius, sigma) in {(10, 3), (15, 5), (15, 8)} and angle in [-90, 90] degrees (ImageMagick's operator)."""
    if radius is None or sigma is None:
        radius, sigma = MOTION_SETTINGS[int(rng.integers(len(MOTION_SETTINGS)))]
    angle = float(_pick({"angle": angle}, "angle", lambda: rng.uniform(-90, 90)))
    _check("radius", radius, 1, 64)
    _check("angle", angle, -360, 360)
    kernel = motion_kernel(int(radius), float(sigma), angle)
    out = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return np.clip(out, 0, 1).astype(np.float32), {"radius": int(radius), "sigma": float(sigma), "angle": round(angle, 4)}


@register_degradation("defocus")
def defocus_blur(image: np.ndarray, rng: np.random.Generator, radius: float | None = None) -> tuple[np.ndarray, Params]:
    """Defocus blur with a disk kernel of radius 3, 4 or 6 pixels."""
    radius = float(_pick({"radius": radius}, "radius", lambda: float(rng.choice([3, 4, 6]))))
    _check("radius", radius, 0, 64)
    out = cv2.filter2D(image, -1, disk_kernel(radius), borderType=cv2.BORDER_REFLECT)
    return np.clip(out, 0, 1).astype(np.float32), {"radius": radius}


@register_degradation("rain")
def rain(
    image: np.ndarray,
    rng: np.random.Generator,
    length: int | None = None,
    angle: float | None = None,
    density: float | None = None,
) -> tuple[np.ndarray, Params]:
    """Rain streaks with length 20-39 px, angle -30..29 degrees from vertical, and density 50-99.

    Drops are seeded with probability ``density / 100 / 256`` per pixel (the convention of
    the widely used rain-synthesis script), swept along the angle into streaks of the given
    length, normalised to [0, 1] and added to the image.
    """
    length = int(_pick({"length": length}, "length", lambda: int(rng.integers(20, 40))))
    angle = float(_pick({"angle": angle}, "angle", lambda: float(rng.integers(-30, 30))))
    density = float(_pick({"density": density}, "density", lambda: float(rng.integers(50, 100))))
    _check("length", length, 1, 200)
    _check("angle", angle, -90, 90)
    _check("density", density, 0, 1000)
    h, w = image.shape[:2]
    drops = (rng.random((h, w)) < density / 100.0 / 256.0).astype(np.float32)
    drops = cv2.filter2D(drops, -1, np.array([[0, 0.1, 0], [0.1, 8, 0.1], [0, 0.1, 0]], np.float32) / 8.0)
    streak = np.zeros((length, length), np.float32)
    np.fill_diagonal(streak, 1.0)
    # The diagonal lies at 45 degrees; rotate it to `angle` from vertical and shorten slightly as the script does.
    rot = cv2.getRotationMatrix2D((length / 2, length / 2), angle - 45, 1 - length / 100.0)
    streak = cv2.warpAffine(streak, rot, (length, length))
    streak = cv2.GaussianBlur(streak, (3, 3), 0)
    streaks = cv2.filter2D(drops, -1, streak)
    streaks = (streaks - streaks.min()) / max(float(np.ptp(streaks)), 1e-6)
    out = image + streaks[..., None]
    return np.clip(out, 0, 1).astype(np.float32), {"length": length, "angle": angle, "density": density}


MODELS = ("protocol", "randomized")
"""Where degradations come from: the benchmark protocol (this module), or the randomized training model
(``eval/randomized.py``), whose every step also draws its implementation."""


def degradation_fn(name: str, model: str = "protocol") -> DegradeFn:
    """The function of degradation ``name`` in ``model``."""
    step = get_degradation(name)
    if model == "protocol":
        return step.fn
    if model == "randomized":
        from tiragent.eval.randomized import RANDOMIZED

        return RANDOMIZED[step.name]
    raise ParameterError(f"unknown degradation model {model!r}: {' or '.join(MODELS)}")


def degrade(
    image: np.ndarray,
    names: Sequence[str],
    seed: int | np.random.SeedSequence = 0,
    params: dict[str, Params] | None = None,
    model: str = "protocol",
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Apply the named degradations in order; returns the image and one record per step.

    Each step draws from its own child of the seed, so a step's parameters do not depend
    on how much randomness the steps before it used. ``model``: one of ``MODELS``.
    """
    params = params or {}
    steps = [(get_degradation(n), degradation_fn(n, model)) for n in names]
    seeds = (seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)).spawn(len(steps))
    records = []
    for (step, fn), step_seed in zip(steps, seeds):
        image, used = fn(image, np.random.default_rng(step_seed), **params.get(step.name, {}))
        records.append({"degradation": step.name, "task": step.task, "params": used})
    return image, records
