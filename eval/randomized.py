"""The randomized training degradation model: every step draws its implementation as well as its strength.

The benchmark protocol (``eval/degradations.py``) stays as it is, for comparability with AgenticIR
and MiO100. Networks and policies trained only on it learn its implementation details (one motion
kernel profile, bicubic with anti-aliasing, Gaussian noise of one range) and fail on images degraded
by other code and on real photos. This model, in the spirit of BSRGAN's shuffled degradations and
Real-ESRGAN's high-order model, draws for each step one of several implementations (its
``variant``) and a strength from a wider range, mild cases included. Same vocabulary, same calling
convention: ``f(image, rng, **params) -> (image, params)``; parameters that are not given are drawn;
the parameters used (the variant among them) are returned; the same seed gives the same pixels.

    degrade(image, ["motion", "noise"], seed=3, model="randomized")
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from tiragent.eval.degradations import DegradeFn, Params, estimate_depth
from tiragent.eval.kernels import disk_kernel, line_kernel, line_taps, one_sided_taps
from tiragent.images import to_uint8
from tiragent.tasks import TASK_OF_DEGRADATION

RANDOMIZED: dict[str, DegradeFn] = {}
VARIANTS: dict[str, tuple[str, ...]] = {}
"""The implementations each degradation draws from."""


def register_randomized(name: str, variants: tuple[str, ...]) -> Callable[[DegradeFn], DegradeFn]:
    if name not in TASK_OF_DEGRADATION:
        raise ValueError(f"degradation {name!r} is not in the vocabulary (tiragent.tasks.TASK_OF_DEGRADATION)")

    def decorator(fn: DegradeFn) -> DegradeFn:
        RANDOMIZED[name], VARIANTS[name] = fn, variants
        return fn

    return decorator


def _variant(name: str, variant: str | None, rng: np.random.Generator) -> str:
    if variant is None:
        return str(rng.choice(VARIANTS[name]))
    if variant not in VARIANTS[name]:
        raise ValueError(f"{name} has no variant {variant!r}; it has {', '.join(VARIANTS[name])}")
    return variant


def _filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return np.clip(cv2.filter2D(image, -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT), 0, 1).astype(np.float32)


def _jpeg(image: np.ndarray, quality: int, subsampling: int = 2) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="JPEG", quality=int(quality), subsampling=subsampling)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0


def _line_kernel(length: int, angle: float, weights: np.ndarray) -> np.ndarray:
    """Taps ``weights`` laid along a line through the centre at ``angle`` degrees, splatted bilinearly."""
    return line_kernel(np.linspace(-(len(weights) - 1) / 2, (len(weights) - 1) / 2, len(weights)), weights, angle, size=2 * length + 3)


def shake_kernel(rng: np.random.Generator, extent: int) -> np.ndarray:
    """A curved camera-shake trajectory (a random walk with momentum, as in Boracchi and Foi's model), splatted into a kernel."""
    steps = 4 * extent
    velocity = rng.normal(size=2)
    velocity /= np.linalg.norm(velocity) + 1e-9
    position = np.zeros(2)
    points = [position.copy()]
    for _ in range(steps):
        velocity = 0.85 * velocity + 0.35 * rng.normal(size=2)
        velocity /= np.linalg.norm(velocity) + 1e-9
        position = position + 0.5 * velocity
        points.append(position.copy())
    path = np.array(points)
    path -= path.mean(axis=0)
    span = max(float(np.abs(path).max()), 1e-6)
    path *= (extent / 2) / span
    size = extent + 3 + (extent + 3) % 2 + 2
    kernel = np.zeros((size, size), np.float64)
    centre = size // 2
    for x, y in path:
        x0, y0 = int(math.floor(x + centre)), int(math.floor(y + centre))
        fx, fy = x + centre - x0, y + centre - y0
        for yy, xx, share in ((y0, x0, (1 - fx) * (1 - fy)), (y0, x0 + 1, fx * (1 - fy)), (y0 + 1, x0, (1 - fx) * fy), (y0 + 1, x0 + 1, fx * fy)):
            if 0 <= yy < size and 0 <= xx < size:
                kernel[yy, xx] += share
    return kernel / kernel.sum()


@register_randomized("motion", ("box", "gaussian", "one_sided", "shake"))
def motion(image: np.ndarray, rng: np.random.Generator, variant: str | None = None, length: int | None = None, angle: float | None = None) -> tuple[np.ndarray, Params]:
    """Motion blur: a line kernel with a box, centred-Gaussian or one-sided Gaussian profile, or a curved camera-shake
    trajectory; 5-35 px long, at any angle."""
    variant = _variant("motion", variant, rng)
    length = int(length if length is not None else rng.integers(5, 36))
    angle = float(angle if angle is not None else rng.uniform(-180, 180))
    if variant == "shake":
        kernel = shake_kernel(rng, length)
    else:
        offsets, weights = line_taps(variant, length)  # sizes as the line kernels always had: the same pixels
        kernel = line_kernel(offsets, weights, angle, size=2 * len(offsets) + 1 if variant == "one_sided" else 2 * length + 3)
    return _filter(image, kernel), {"variant": variant, "length": length, "angle": round(angle, 3)}


def motion_taps(params: Params) -> tuple[np.ndarray, np.ndarray] | None:
    """Offsets and weights along the blur axis of the straight trail that a motion blur with ``params`` used: this
    model's line variants, or the protocol's ``radius`` and ``sigma``; None for a camera-shake path, which is no line."""
    variant = params.get("variant")
    if variant is None:
        return one_sided_taps(int(params["radius"]), float(params["sigma"]))
    return None if variant == "shake" else line_taps(str(variant), int(params["length"]))


@register_randomized("defocus", ("disk", "gaussian"))
def defocus(image: np.ndarray, rng: np.random.Generator, variant: str | None = None, radius: float | None = None) -> tuple[np.ndarray, Params]:
    """Defocus blur: an anti-aliased disk of radius 1-7 px, or a Gaussian of sigma 0.7-4 px."""
    variant = _variant("defocus", variant, rng)
    if variant == "disk":
        radius = float(radius if radius is not None else rng.uniform(1.0, 7.0))
        return _filter(image, disk_kernel(radius)), {"variant": variant, "radius": round(radius, 3)}
    sigma = float(radius if radius is not None else rng.uniform(0.7, 4.0))
    out = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    return np.clip(out, 0, 1).astype(np.float32), {"variant": variant, "radius": round(sigma, 3)}


RESIZE = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "bicubic_no_aa": cv2.INTER_CUBIC}


@register_randomized("lowres", ("bicubic", "bicubic_no_aa", "bilinear", "area", "lanczos"))
def lowres(image: np.ndarray, rng: np.random.Generator, variant: str | None = None, scale: int | None = None, pre_blur: float | None = None) -> tuple[np.ndarray, Params]:
    """Downscaling by 2 or 4: bicubic with anti-aliasing (as MATLAB's imresize), bicubic without, bilinear, area or
    Lanczos, after an optional Gaussian pre-blur (sigma 0.4-1.5, one time in three)."""
    variant = _variant("lowres", variant, rng)
    scale = int(scale if scale is not None else rng.choice([2, 4]))
    pre_blur = float(pre_blur if pre_blur is not None else (rng.uniform(0.4, 1.5) if rng.random() < 1 / 3 else 0.0))
    if pre_blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=pre_blur, borderType=cv2.BORDER_REFLECT)
    h, w = image.shape[:2]
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    if variant in RESIZE:
        out = cv2.resize(image, size, interpolation=RESIZE[variant])
    else:
        pil = Image.Resampling.BICUBIC if variant == "bicubic" else Image.Resampling.LANCZOS
        out = np.stack([np.asarray(Image.fromarray(image[..., c], mode="F").resize(size, pil)) for c in range(3)], axis=2)
    return np.clip(out, 0, 1).astype(np.float32), {"variant": variant, "scale": scale, "pre_blur": round(pre_blur, 3)}


@register_randomized("noise", ("gaussian", "gaussian_luma", "poisson", "camera"))
def noise(image: np.ndarray, rng: np.random.Generator, variant: str | None = None, sigma: float | None = None) -> tuple[np.ndarray, Params]:
    """Noise from mild to strong: Gaussian per channel or luminance-correlated (sigma 2-50 of 255), Poisson (photon
    counts for an equivalent sigma), or camera-like: signal-dependent, spatially correlated as after demosaicing, then
    JPEG (quality 70-95)."""
    variant = _variant("noise", variant, rng)
    sigma = float(sigma if sigma is not None else np.exp(rng.uniform(math.log(2), math.log(50))))  # log-uniform: mild cases are common
    s = sigma / 255.0
    params: Params = {"variant": variant, "sigma": round(sigma, 3)}
    if variant == "gaussian":
        out = image + rng.normal(0, s, image.shape)
    elif variant == "gaussian_luma":
        out = image + rng.normal(0, s, image.shape[:2])[..., None] * np.array([1.0, 1.0, 1.0]) + rng.normal(0, s / 3, image.shape)
    elif variant == "poisson":
        photons = 0.5 / s**2  # the count at mid-grey whose shot noise has standard deviation sigma
        out = rng.poisson(np.clip(image, 0, 1) * photons) / photons
    else:
        read, shot = s * rng.uniform(0.2, 0.6), s * rng.uniform(0.6, 1.2)
        std = np.sqrt(read**2 + shot**2 * np.clip(image, 0, 1))
        field = rng.normal(0, 1, image.shape).astype(np.float32)
        correlation = float(rng.uniform(0.5, 1.0))
        field = cv2.GaussianBlur(field, (0, 0), sigmaX=correlation)
        field /= max(float(field.std()), 1e-6)
        quality = int(rng.integers(70, 96))
        params.update(correlation=round(correlation, 3), quality=quality)
        return _jpeg(np.clip(image + std * field, 0, 1), quality), params
    return np.clip(out, 0, 1).astype(np.float32), params


@register_randomized("jpeg", ("single", "double"))
def jpeg(image: np.ndarray, rng: np.random.Generator, variant: str | None = None, quality: int | None = None, subsampling: int | None = None) -> tuple[np.ndarray, Params]:
    """JPEG with quality 8-90, with (4:2:0) or without (4:4:4) chroma subsampling; ``double``: compressed again at
    another quality, as photos re-saved after editing are."""
    variant = _variant("jpeg", variant, rng)
    quality = int(quality if quality is not None else rng.integers(8, 91))
    subsampling = int(subsampling if subsampling is not None else rng.choice([0, 2]))
    params: Params = {"variant": variant, "quality": quality, "subsampling": "4:4:4" if subsampling == 0 else "4:2:0"}
    if variant == "double":
        first = int(rng.integers(30, 96))
        image = _jpeg(image, first, subsampling)
        params["first_quality"] = first
    return _jpeg(image, quality, subsampling), params


def _streaks(rng: np.random.Generator, h: int, w: int, variant: str, length: int, angle: float, density: float) -> np.ndarray:
    """One layer of streak opacity in [0, 1]: random drops drawn along a line of ``length`` px at ``angle`` from vertical."""
    drops = (rng.random((h, w)) < density).astype(np.float32) * rng.uniform(0.5, 1.0, (h, w)).astype(np.float32)
    profile = np.ones(length)
    if variant == "tapered":
        profile = np.sin(np.linspace(0, math.pi, length)) ** 0.7
    kernel = _line_kernel(length, 90 - angle, profile)
    kernel /= kernel.max()
    streaks = cv2.filter2D(drops, -1, kernel.astype(np.float32))
    if variant == "wide":
        streaks = cv2.dilate(streaks, np.ones((1, int(rng.integers(2, 4))), np.uint8))
    if variant == "blurred":
        streaks = cv2.GaussianBlur(streaks, (0, 0), sigmaX=float(rng.uniform(0.8, 1.6)))
    return np.clip(streaks, 0, 1)


@register_randomized("rain", ("thin", "wide", "tapered", "blurred", "layered", "veiled"))
def rain(image: np.ndarray, rng: np.random.Generator, variant: str | None = None, length: int | None = None, angle: float | None = None,
         density: float | None = None) -> tuple[np.ndarray, Params]:  # fmt: skip
    """Rain streaks of several shapes: thin lines, wide (2-3 px) lines, streaks tapered at both ends, motion-blurred
    streaks, 2-3 layers at different depths (lengths, densities and angles of their own, as Garg and Nayar describe
    rain seen through a camera), or streaks behind a veil of accumulated rain (Yang et al.'s heavy-rain model,
    ``alpha * (scene + streaks) + (1 - alpha) * airlight``, alpha 0.6-0.9); 10-60 px long, -40..40 degrees from
    vertical, of a greyish to white tone blended with a brightness of 0.5-1. Rain falls under overcast skies: in half
    the cases the scene is dimmed to 0.7-1 and slightly desaturated, and in a third softened (sigma 0.3-0.8, wet air)."""
    variant = _variant("rain", variant, rng)
    length = int(length if length is not None else rng.integers(10, 61))
    angle = float(angle if angle is not None else rng.uniform(-40, 40))
    density = float(density if density is not None else rng.uniform(0.0005, 0.004))
    h, w = image.shape[:2]
    params: Params = {"variant": variant, "length": length, "angle": round(angle, 3), "density": round(density, 5)}
    if rng.random() < 0.5:
        dim = float(rng.uniform(0.7, 1.0))
        saturation = float(rng.uniform(0.7, 1.0))
        grey = image.mean(axis=2, keepdims=True)
        image = (grey + (image - grey) * saturation) * dim
        params.update(dim=round(dim, 3), saturation=round(saturation, 3))
    if rng.random() < 1 / 3:
        soft = float(rng.uniform(0.3, 0.8))
        image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigmaX=soft)
        params["soft"] = round(soft, 3)
    if variant == "layered":
        layers = int(rng.integers(2, 4))
        streaks = np.zeros((h, w), np.float32)
        for i in range(layers):  # nearer layers: longer, sparser, brighter streaks
            near = 1.0 - i / layers
            shape = str(rng.choice(["thin", "blurred"]))
            layer = _streaks(rng, h, w, shape, max(5, round(length * near)), angle + float(rng.uniform(-10, 10)), density * (0.5 + i))
            streaks = np.maximum(streaks, layer * (0.5 + 0.5 * near))
    else:
        streaks = _streaks(rng, h, w, "thin" if variant == "veiled" else variant, length, angle, density)
    brightness = float(rng.uniform(0.5, 1.0))
    tone = float(rng.uniform(0.75, 1.0))
    alpha = streaks[..., None] * brightness
    out = image * (1 - alpha) + alpha * tone
    if variant == "veiled":
        veil = float(rng.uniform(0.6, 0.9))
        airlight = float(rng.uniform(0.7, 1.0))
        out = veil * out + (1 - veil) * airlight
        params["veil"] = round(veil, 3)
    return np.clip(out, 0, 1).astype(np.float32), params


def _smooth_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    small = rng.random((4, 4)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _fractal_field(rng: np.random.Generator, h: int, w: int, octaves: int = 5) -> np.ndarray:
    """Cloud-like density in [0, 1]: random grids of 3, 6, 12, ... cells upsampled and summed with halving weights."""
    field = np.zeros((h, w), np.float32)
    for k in range(octaves):
        cells = 3 * 2**k
        small = rng.random((cells, cells)).astype(np.float32)
        field += 0.5**k * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.min()) / max(float(np.ptp(field)), 1e-6)


@register_randomized("haze", ("estimated", "vertical", "smooth", "uniform", "patchy", "scattered"))
def haze(image: np.ndarray, rng: np.random.Generator, variant: str | None = None, airlight: float | None = None, beta: float | None = None) -> tuple[np.ndarray, Params]:
    """Haze by the scattering model with one of several depth proxies (the protocol's estimate, a vertical gradient, a
    random smooth field, none: uniform haze, or non-homogeneous patches of fog: a cloud-like fractal density over a
    floor of 0.3, as in NH-HAZE); ``scattered``: the estimated depth with the forward scattering of the atmospheric
    point-spread function (Narasimhan and Nayar), the direct light blurred by sigma 0.5-1.5 px growing with the
    optical depth. Airlight 0.6-1.0 with a slight tint, beta 0.3-2.5."""
    variant = _variant("haze", variant, rng)
    h, w = image.shape[:2]
    airlight = float(airlight if airlight is not None else rng.uniform(0.6, 1.0))
    beta = float(beta if beta is not None else rng.uniform(0.3, 2.5))
    if variant in ("estimated", "scattered"):
        depth = estimate_depth(image)
    elif variant == "vertical":
        depth = np.repeat(np.linspace(1.0, rng.uniform(0.0, 0.5), h, dtype=np.float32)[:, None], w, axis=1)
    elif variant == "smooth":
        depth = _smooth_field(rng, h, w)
        depth = (depth - depth.min()) / max(float(np.ptp(depth)), 1e-6)
    elif variant == "patchy":
        depth = 0.3 + 0.7 * _fractal_field(rng, h, w)
    else:
        depth = np.full((h, w), 0.7, np.float32)
    tint = airlight * (1 + rng.uniform(-0.05, 0.05, 3))
    t = np.exp(-beta * depth)[..., None]
    direct = image
    if variant == "scattered":
        sigma = float(rng.uniform(0.5, 1.5))
        blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)
        weight = np.clip(beta * depth / 2.5, 0, 1)[..., None]  # more scattering where more air lies between
        direct = image * (1 - weight) + blurred * weight
    out = direct * t + np.clip(tint, 0, 1) * (1 - t)
    return np.clip(out, 0, 1).astype(np.float32), {"variant": variant, "airlight": round(airlight, 3), "beta": round(beta, 3)}


@register_randomized("dark", ("gamma", "scale", "shift", "exposure"))
def dark(image: np.ndarray, rng: np.random.Generator, variant: str | None = None, strength: float | None = None, noisy: bool | None = None) -> tuple[np.ndarray, Params]:
    """Low light with one of several curves (a gamma of 1.5-3.5, a linear scale to 0.15-0.6, a shift down by 0.1-0.25, or
    an exposure curve), and in half the cases the noise that low light brings (shot and read noise, then requantised)."""
    variant = _variant("dark", variant, rng)
    if variant == "gamma":
        strength = float(strength if strength is not None else rng.uniform(1.5, 3.5))
        out = np.power(image, strength)
    elif variant == "scale":
        strength = float(strength if strength is not None else rng.uniform(0.15, 0.6))
        out = image * strength
    elif variant == "shift":
        strength = float(strength if strength is not None else rng.uniform(0.1, 0.25))
        out = image - strength
    else:
        strength = float(strength if strength is not None else rng.uniform(1.0, 3.0))  # stops under-exposed
        linear = np.power(image, 2.2) * 2.0**-strength
        out = np.power(linear, 1 / 2.2)
    out = np.clip(out, 0, 1)
    noisy = bool(noisy if noisy is not None else rng.random() < 0.5)
    params: Params = {"variant": variant, "strength": round(strength, 3), "noisy": noisy}
    if noisy:
        photons = float(rng.uniform(200, 2000))
        read = float(rng.uniform(0.002, 0.01))
        out = rng.poisson(out * photons) / photons + rng.normal(0, read, out.shape)
        out = np.round(np.clip(out, 0, 1) * 255) / 255
        params["photons"] = round(photons, 1)
    return np.clip(out, 0, 1).astype(np.float32), params



def anisotropy(gray: np.ndarray) -> float:
    """How much the gradients of a grey image share one orientation: 0 none, 1 every edge parallel (the coherence of
    the structure tensor summed over the frame). A motion trail makes it high; so does a close-up of parallel edges."""
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1)
    jxx, jyy, jxy = float((gx * gx).mean()), float((gy * gy).mean()), float((gx * gy).mean())
    return math.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy + 1e-8)


def camera_native(image: np.ndarray, rng: np.random.Generator, dim: bool = False, windows: int = 1) -> tuple[np.ndarray, Params]:
    """A clean photo as a camera's own pixels show it, which is not a degradation to restore.

    A camera's sensor samples finer than its optics resolve, so an unscaled crop of a real photo is smooth at
    pixel scale (PolyU's references have a Laplacian 3-10x weaker than the downscaled training photos). Made here
    by upscaling (x1.5-4, log-uniform; cubic, Lanczos or linear) with a little optical blur, a crop of 192-512 px and
    an exposure of 0.7-1.0, so that a detector learns that smooth is not blurred and small is not low-resolution.

    ``dim``: a dim scene as the camera recorded it, exposure 0.15-0.7 (log-uniform): its darkness is the scene's, as
    in PolyU's indoor photos at ISO 3200-6400 (mean brightness 0.07-0.2, their references as dark), not a low-light
    degradation to undo. The same number of draws either way.

    ``windows``: draw that many such photos and keep the one whose gradients are the most oriented (``anisotropy``):
    close-ups of cables, edges and stripes, whose structure runs one way as a motion trail does (PolyU's photos:
    anisotropy 0.42 +- 0.25, against 0.27 +- 0.17 for single windows of the training photos; the most oriented of 4
    windows: 0.42 +- 0.19). At 1, the draws are as they were.
    """
    if windows > 1:
        drawn = [camera_native(image, rng, dim) for _ in range(windows)]
        best, params = max(drawn, key=lambda d: anisotropy(cv2.cvtColor(d[0], cv2.COLOR_RGB2GRAY)))
        return best, {**params, "windows": windows}
    factor = float(np.exp(rng.uniform(math.log(1.5), math.log(4.0))))
    interpolation = str(rng.choice(["cubic", "lanczos", "linear"]))
    flag = {"cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4, "linear": cv2.INTER_LINEAR}[interpolation]
    h, w = image.shape[:2]
    side_h, side_w = (int(rng.integers(192, 513)) for _ in range(2))
    # upscale only the window the crop needs: the same pixels, without the cost of the whole enlarged photo
    src_h, src_w = min(h, math.ceil(side_h / factor) + 4), min(w, math.ceil(side_w / factor) + 4)
    y, x = int(rng.integers(0, h - src_h + 1)), int(rng.integers(0, w - src_w + 1))
    out = cv2.resize(image[y : y + src_h, x : x + src_w], (round(src_w * factor), round(src_h * factor)), interpolation=flag)
    out = out[: min(side_h, out.shape[0]), : min(side_w, out.shape[1])]
    optics = float(rng.uniform(0.0, 0.6))
    if optics > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=optics)
    exposure = float(np.exp(rng.uniform(math.log(0.15), math.log(0.7))) if dim else rng.uniform(0.7, 1.0))
    params: Params = {"factor": round(factor, 3), "interpolation": interpolation, "optics": round(optics, 3), "exposure": round(exposure, 3)}
    return np.clip(out * exposure, 0, 1).astype(np.float32), params


def camera_noise(rng: np.random.Generator) -> Params:
    """Parameters of the mild camera noise a camera-native photo carries: the ``camera`` variant at sigma 2-16 (log-uniform)."""
    return {"variant": "camera", "sigma": float(np.exp(rng.uniform(math.log(2), math.log(16))))}


def camera_file(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """The camera's own JPEG at quality 88-98: artifacts below visibility, not a degradation to restore."""
    quality = int(rng.integers(88, 99))
    return _jpeg(image, quality), {"quality": quality}
