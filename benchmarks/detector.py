"""Accuracy, calibration and severity of the degradation detectors, on images neither was trained on.

Four sets, built here from seeds (nothing is read from a benchmark folder):

- ``dev``: the protocol's 16 combinations (``eval/degradations.py``) on the last 34 CBSD68 images
  (the logistic detector was fitted on the first 34; the learned one never saw CBSD68), two
  combinations per image, plus each image clean;
- ``independent``: the same combinations made by albumentations (``benchmarks/independent.py``)
  on McMaster and the last 34 CBSD68 images, plus each image clean;
- ``levin``: real camera-shake blur (the eight Levin et al. 2009 kernels) on the same images;
- ``polyu``: real camera noise, PolyU's 50 noisy photos (noise present) and their clean means (nothing);
- ``small``: clean crops of 144-320 px of the unseen images (nothing: a small photo is not a low-resolution one).

Real photos without references, where only one degradation is known to be present (the rest is unknown, so no exact
set): LIME's underexposed photos (low light) and FBCNN's real JPEG photos (JPEG); per detector, the share read as
carrying it and its mean probability.

Per detector: exact-set accuracy, accuracy per degradation (threshold 0.5), expected calibration
error over all eight probabilities, a reliability diagram, and severity errors where the truth is known.

    python benchmarks/detector.py [--detectors learned logistic before=runs/detector/detector_net.safetensors]

A detector is ``logistic``, ``learned`` (the shipped weights, or ``--weights``), or ``LABEL=WEIGHTS``: the learned
detector with other weights, under that label.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from common import ROOT, SHARED_DATA, write_report
from independent import degrade_independent
from tqdm import tqdm

from tiragent.eval.bench import all_combinations
from tiragent.eval.calibration import presence_scores, reliability
from tiragent.eval.degradations import degrade
from tiragent.eval.kernels import levin_kernels
from tiragent.images import list_images, random_crop, read_image
from tiragent.server.detector_net import SEVERITIES, severity_of
from tiragent.server.perception import analyse
from tiragent.tasks import TASK_OF_DEGRADATION

NAMES = list(TASK_OF_DEGRADATION)


def sample(image: np.ndarray, present: tuple[str, ...], severity: dict[str, float] | None = None) -> dict:
    return {"image": image, "present": set(present), "severity": severity or {}}


def build_sets(clean: Path, mcmaster: Path, polyu: Path, kernels: Path) -> dict[str, list[dict]]:
    held_cbsd = list_images(clean)[34:]
    unseen = list_images(mcmaster) + held_cbsd
    combos = [combo for _, combo in all_combinations()]
    sets: dict[str, list[dict]] = {"dev": [], "independent": [], "levin": [], "polyu": [], "small": []}
    for i, path in enumerate(tqdm(held_cbsd, desc="dev set", unit="img")):
        image = read_image(path)
        sets["dev"].append(sample(image, ()))
        for j in range(2):
            combo = combos[(2 * i + j) % len(combos)]
            out, records = degrade(image, combo, seed=1000 + 2 * i + j)
            truth = {r["degradation"]: severity_of(r["degradation"], r["params"]) for r in records if r["degradation"] in SEVERITIES}
            sets["dev"].append(sample(out, combo, truth))
    levin = levin_kernels(str(kernels / "Levin09.mat"))
    for i, path in enumerate(tqdm(unseen, desc="independent and levin sets", unit="img")):
        image = read_image(path)
        sets["independent"].append(sample(image, ()))
        for j in range(2):
            combo = combos[(2 * i + j + 5) % len(combos)]
            out = image
            for k, name in enumerate(combo):
                out = degrade_independent(out, name, seed=7000 + 10 * (2 * i + j) + k)
            sets["independent"].append(sample(out, combo))
        blurred = np.clip(cv2.filter2D(image, -1, levin[i % len(levin)], borderType=cv2.BORDER_REFLECT), 0, 1)
        sets["levin"].append(sample(blurred, ("motion",)))
        sets["small"].append(sample(random_crop(image, np.random.default_rng(500 + i), 144, 320), ()))
    for noisy, target in zip(list_images(polyu / "input"), list_images(polyu / "target")):
        a, b = read_image(noisy), read_image(target)
        sets["polyu"].append(sample(a, ("noise",), {"noise": float((a - b).std() * 255)}))
        sets["polyu"].append(sample(b, ()))
    return sets


REAL_UNLABELLED = {"lime": ("LIME_lowlight_noGT", "dark"), "real_jpeg": ("real_jpeg_noGT", "jpeg")}
"""Real photos without references: the folder under ``--real`` and the one degradation each is known to carry."""


def real_recall(real: Path, chosen: dict[str, tuple[str, Path | None]]) -> list[str]:
    """Markdown rows: per set of real photos, each detector's share reading its known degradation, and mean probability."""
    rows = []
    for name, (folder, degradation) in REAL_UNLABELLED.items():
        paths = list_images(real / folder) if (real / folder).is_dir() else []
        if not paths:
            continue
        found = {label: [analyse(read_image(p), d, w).probabilities[degradation] for p in paths] for label, (d, w) in chosen.items()}
        cells = " | ".join(f"{np.mean(np.array(v) > 0.5):.2f} ({np.mean(v):.2f})" for v in found.values())
        rows.append(f"| {name} | {degradation} | {len(paths)} | {cells} |")
    return rows


def score(rows: list[dict], detector: str) -> dict:
    probs = np.array([[r[detector]["p"][n] for n in NAMES] for r in rows])
    truth = np.array([[n in r["present"] for n in NAMES] for r in rows], np.float64)
    out = {
        "n": len(rows),
        **presence_scores(probs, truth, NAMES),
        "reliability": [b.__dict__ for b in reliability(probs, truth)],
        "severity_mae": {},
    }
    for name in SEVERITIES:
        pairs = [(r[detector]["s"][name], r["severity"][name]) for r in rows if name in r["severity"] and name in r[detector]["s"]]
        if pairs:
            out["severity_mae"][name] = (float(np.mean([abs(a - b) for a, b in pairs])), float(np.mean([b for _, b in pairs])), len(pairs))
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [s for s in ("dev", "independent") if s in next(iter(results.values()))]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4), squeeze=False)
    for ax, name in zip(axes[0], sets):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        for detector, by_set in results.items():
            bins = [b for b in by_set[name]["reliability"] if b["count"]]
            ax.plot([b["mean_probability"] for b in bins], [b["frequency"] for b in bins], marker="o", label=f"{detector} (ECE {by_set[name]['ece']:.3f})")
        ax.set(title=f"{name} set", xlabel="predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def resolve(entry: str, weights: Path | None) -> tuple[str, tuple[str, Path | None]]:
    """``logistic``, ``learned`` (``weights`` or the shipped ones) or ``LABEL=WEIGHTS``: (label, (detector, weights))."""
    if "=" in entry:
        label, path = entry.split("=", 1)
        if not Path(path).is_file():
            raise SystemExit(f"--detectors {entry}: no weights file at {path}")
        return label, ("learned", Path(path))
    if entry not in ("learned", "logistic"):
        raise SystemExit(f"--detectors takes learned, logistic or LABEL=WEIGHTS, not {entry!r}")
    return entry, (entry, weights if entry == "learned" else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", nargs="+", default=["learned", "logistic"])
    parser.add_argument("--weights", type=Path, help="learned detector weights (default: the shipped ones)")
    parser.add_argument("--clean", type=Path, default=SHARED_DATA / "clean" / "CBSD68")
    parser.add_argument("--mcmaster", type=Path, default=SHARED_DATA / "clean" / "McMaster")
    parser.add_argument("--polyu", type=Path, default=SHARED_DATA / "real" / "PolyU_noise")
    parser.add_argument("--kernels", type=Path, default=SHARED_DATA / "blur_kernels")
    parser.add_argument("--real", type=Path, default=SHARED_DATA / "real", help="folder holding LIME_lowlight_noGT and real_jpeg_noGT")
    parser.add_argument("--name", default="detector", help="report name under docs/benchmarks")
    args = parser.parse_args()
    chosen = dict(resolve(d, args.weights) for d in args.detectors)
    sets = build_sets(args.clean, args.mcmaster, args.polyu, args.kernels)
    for rows in sets.values():
        for r in tqdm(rows, desc="detect", unit="img", leave=False):
            for label, (detector, weights) in chosen.items():
                found = analyse(r["image"], detector, weights)
                r[label] = {"p": found.probabilities, "s": found.severity}
    args.detectors = list(chosen)
    results = {d: {name: score(rows, d) for name, rows in sets.items()} for d in args.detectors}
    lines = [
        "Sets built from seeds by this script; none of their images was used to train either detector. Threshold 0.5.\n",
        "| set | images | " + " | ".join(f"{d}: exact set | {d}: ECE" for d in args.detectors) + " |",
        "|---|---:|" + "---:|---:|" * len(args.detectors),
    ]
    for name, rows in sets.items():
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(f"{results[d][name]['exact']:.3f} | {results[d][name]['ece']:.3f}" for d in args.detectors) + " |")
    for name in sets:
        lines += [f"\n### {name}: per degradation (accuracy; recall / false alarms)\n", "| degradation | " + " | ".join(args.detectors) + " |", "|---|" + "---|" * len(args.detectors)]
        for n in NAMES:
            cells = []
            for d in args.detectors:
                r = results[d][name]
                recall = "-" if r["recall"][n] is None else f"{r['recall'][n]:.2f}"
                fa = "-" if r["false_alarm"][n] is None else f"{r['false_alarm'][n]:.2f}"
                cells.append(f"{r['accuracy'][n]:.3f} ({recall} / {fa})")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    real_rows = real_recall(args.real, chosen)
    if real_rows:
        lines += [
            "\n### Real photos without references: share read as carrying their known degradation (mean probability)\n",
            "| set | degradation | images | " + " | ".join(args.detectors) + " |",
            "|---|---|---:|" + "---|" * len(args.detectors),
            *real_rows,
        ]
    lines += ["\n### Severity (learned detectors; mean absolute error, mean true value, samples)\n", "| detector | set | degradation | unit | MAE | mean truth | n |", "|---|---|---|---|---:|---:|---:|"]
    for label, (detector, _) in chosen.items():
        if detector == "learned":
            for name in sets:
                for n, (mae, mean, count) in results[label][name]["severity_mae"].items():
                    lines.append(f"| {label} | {name} | {n} | {SEVERITIES[n].unit} | {mae:.2f} | {mean:.2f} | {count} |")
    figure = ROOT / "docs" / "benchmarks" / f"{args.name}_reliability.png"
    plot(results, figure)
    lines.append(f"\nReliability diagrams: [{figure.name}]({figure.name}).")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    summary = {d: {name: {k: v for k, v in r.items() if k != "reliability"} for name, r in by.items()} for d, by in results.items()}
    print("written to", write_report(args.name, markdown, {"results": summary}))


if __name__ == "__main__":
    main()
