"""What a detector reads on held-out training photos degraded by this project's own code, one case at a time.

A diagnostic beside ``benchmarks/detector.py``: no benchmark image and no independent implementation is used, so
what it shows can be acted on without fitting an evaluation set. The first 24 photos held out of the detector's
training (``train.common.split_photos`` of CBSD432 and CSun_Hays80_half, fraction 0.1) are degraded per case, with
one seed per photo: each randomized variant of rain and haze alone, the protocol's rain, haze, motion, defocus
and four of its combinations, its noise on the photo and on a dim scene (the photo at exposure 0.6, not low light),
low light with and without strong Gaussian noise. Per case and detector: the mean
probability of the degradations that matter there, and the share read at 0.5 or more.

    python benchmarks/detector_probe.py --detectors shipped=server/weights/detector_net.safetensors v6=runs/detector-v6/detector_net.safetensors
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from common import SHARED_DATA, write_report
from tqdm import tqdm

from tiragent.eval import randomized
from tiragent.eval.degradations import degrade
from tiragent.images import read_image
from tiragent.server.perception import analyse
from tiragent.train.common import split_photos

Case = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _protocol(*names: str, model: str = "protocol") -> Case:
    return lambda x, r: degrade(x, list(names), seed=int(r.integers(2**31)), model=model)[0]


def _variant(name: str, variant: str) -> Case:
    fn = randomized.RANDOMIZED[name]
    return lambda x, r: fn(x, r, variant=variant)[0]


def _dark_then_gaussian(x: np.ndarray, r: np.random.Generator) -> np.ndarray:
    """A gamma of 1.5-2.2, then per-channel Gaussian noise of sigma 25 (of 255): strong noise on an underexposed photo."""
    return np.clip(np.power(x, r.uniform(1.5, 2.2)) + r.normal(0, 25 / 255, x.shape), 0, 1).astype(np.float32)


CASES: dict[str, tuple[Case, tuple[str, ...]]] = {
    "clean": (lambda x, r: x, ("rain", "haze", "dark", "noise", "motion", "defocus")),
    **{f"rain, randomized {v}": (_variant("rain", v), ("rain",)) for v in randomized.VARIANTS["rain"]},
    "rain, randomized thin, then the frame blurred (3x3 box)": (lambda x, r: cv2.blur(randomized.rain(x, r, variant="thin")[0], (3, 3)), ("rain", "defocus")),
    "rain, protocol": (_protocol("rain"), ("rain",)),
    **{f"haze, randomized {v}": (_variant("haze", v), ("haze",)) for v in randomized.VARIANTS["haze"]},
    "haze, protocol": (_protocol("haze"), ("haze",)),
    "dark, randomized gamma, no noise": (lambda x, r: randomized.dark(x, r, variant="gamma", noisy=False)[0], ("dark", "noise")),
    "dark (gamma 1.5-2.2), then Gaussian noise sigma 25": (_dark_then_gaussian, ("dark", "noise")),
    "dark+noise, protocol": (_protocol("dark", "noise"), ("dark", "noise")),
    "dark+noise, randomized": (_protocol("dark", "noise", model="randomized"), ("dark", "noise")),
    "rain+lowres, protocol": (_protocol("rain", "lowres"), ("rain", "dark")),
    "rain+haze, protocol": (_protocol("rain", "haze"), ("rain", "haze")),
    "noise, protocol": (_protocol("noise"), ("noise", "dark")),
    "a dim scene (exposure 0.6), then noise, protocol": (lambda x, r: _protocol("noise")(x * np.float32(0.6), r), ("noise", "dark")),
    "motion+noise, protocol": (_protocol("motion", "noise"), ("motion", "noise", "dark")),
    "motion, protocol": (_protocol("motion"), ("motion", "defocus")),
    "defocus, protocol": (_protocol("defocus"), ("defocus", "motion")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", nargs="+", required=True, help="LABEL=WEIGHTS of learned detectors, or 'logistic'")
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--name", default="detector_probe")
    args = parser.parse_args()
    detectors = [d.split("=", 1) if "=" in d else (d, None) for d in args.detectors]
    _, held_out = split_photos([SHARED_DATA / "clean" / "CBSD432", SHARED_DATA / "clean" / "CSun_Hays80_half"], 0.1)
    photos = [read_image(p) for p in held_out[: args.photos]]
    rows, data = [], {}
    for case, (make, shown) in tqdm(CASES.items(), desc="cases"):
        images = [make(photo, np.random.default_rng(i)) for i, photo in enumerate(photos)]
        cells = []
        for label, weights in detectors:
            kind = "logistic" if weights is None else "learned"
            read = [analyse(image, kind, Path(weights) if weights else None).probabilities for image in images]
            summary = {d: (float(np.mean([p[d] for p in read])), float(np.mean([p[d] >= 0.5 for p in read]))) for d in shown}
            data.setdefault(case, {})[label] = summary
            cells.append(", ".join(f"{d} {mean:.2f} ({share:.0%})" for d, (mean, share) in summary.items()))
        rows.append(f"| {case} | " + " | ".join(cells) + " |")
    header = "| case | " + " | ".join(label for label, _ in detectors) + " |\n|---|" + "---|" * len(detectors) + "\n"
    text = (
        f"{len(photos)} photos held out of the detectors' training, each degraded once per case (seed = its index). "
        "Per detector: mean probability (share read at 0.5 or more) of each degradation shown.\n\n" + header + "\n".join(rows) + "\n"
    )
    print(write_report(args.name, text, {"photos": [str(p) for p in held_out[: args.photos]], "cases": data}))


if __name__ == "__main__":
    main()
