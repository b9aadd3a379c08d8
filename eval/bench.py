"""Benchmark folders in the AgenticIR / MiO100 protocol: 16 degradation combinations in three groups.

A benchmark folder holds ``input/`` (degraded), ``target/`` (clean) and ``manifest.json``
with, for every image, its combination, group, every sampled parameter and its seed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tiragent.errors import ImageError
from tiragent.eval.degradations import degrade
from tiragent.images import list_images, read_image, write_image

COMBINATIONS: dict[str, list[tuple[str, ...]]] = {
    "A": [
        ("rain", "haze"),
        ("motion", "lowres"),
        ("dark", "noise"),
        ("defocus", "jpeg"),
        ("noise", "jpeg"),
        ("rain", "lowres"),
        ("motion", "dark"),
        ("defocus", "haze"),
    ],
    "B": [
        ("motion", "jpeg"),
        ("haze", "noise"),
        ("defocus", "lowres"),
        ("rain", "dark"),
    ],
    "C": [
        ("haze", "motion", "lowres"),
        ("rain", "noise", "lowres"),
        ("dark", "defocus", "jpeg"),
        ("motion", "defocus", "noise"),
    ],
}

OUT_OF_DOMAIN: list[tuple[str, ...]] = [("motion", "noise"), ("haze", "jpeg"), ("dark", "lowres"), ("rain", "jpeg")]
"""Two-degradation combinations that are not among the 16: group "OOD" of ``make_benchmark(groups=...)``."""

MANIFEST = "manifest.json"

Synthesis = Callable[[np.ndarray, tuple[str, ...], int], tuple[np.ndarray, list[dict[str, Any]]]]
"""``(clean, combination, seed) -> (degraded, steps)``: how a benchmark's inputs are made (default: ``degrade``)."""


@dataclass(frozen=True)
class BenchItem:
    name: str
    group: str
    combination: tuple[str, ...]
    source: str
    seed: int
    steps: list[dict[str, Any]]

    @property
    def combo_name(self) -> str:
        return "+".join(self.combination)


def all_combinations(out_of_domain: bool = False) -> Iterable[tuple[str, tuple[str, ...]]]:
    """The 16 (group, combination) pairs; with ``out_of_domain``, then group "OOD" (never used in training)."""
    for group, combos in {**COMBINATIONS, **({"OOD": OUT_OF_DOMAIN} if out_of_domain else {})}.items():
        for combo in combos:
            yield group, combo


def _protocol(clean: np.ndarray, combination: tuple[str, ...], seed: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    return degrade(clean, combination, seed=seed)


def make_benchmark(
    clean_dir: str | Path,
    out_dir: str | Path,
    *,
    per_combo: int = 6,
    seed: int = 0,
    groups: Iterable[str] = ("A", "B", "C"),
    progress: bool = True,
    synthesis: Synthesis | None = None,
    protocol: str = "AgenticIR/MiO100 combinations, tir-agent synthesis",
) -> list[BenchItem]:
    """Build a benchmark folder: ``per_combo`` images for each combination of the chosen groups (A, B, C: the 16;
    OOD: ``OUT_OF_DOMAIN``). ``synthesis`` makes the inputs (default: this project's ``degrade``), e.g. an
    independent implementation; ``protocol`` says which in the manifest.

    Clean images are assigned round-robin (combination ``k``, copy ``j`` uses image
    ``(k * per_combo + j) mod n``), so every clean image is used as evenly as possible.
    """
    if per_combo < 1:
        raise ValueError(f"per_combo must be at least 1, not {per_combo}")
    sources = list_images(clean_dir)
    if not sources:
        raise ImageError(f"{clean_dir}: no image files (looked for .png, .jpg, .bmp, .tif, .webp)")
    groups = list(groups)
    known = list(dict.fromkeys(g for g, _ in all_combinations(out_of_domain=True)))
    unknown = [g for g in groups if g not in known]
    if unknown:
        raise ValueError(f"unknown group(s) {unknown}; the groups are {known}")
    synthesis = synthesis or _protocol
    out_dir = Path(out_dir)
    (out_dir / "input").mkdir(parents=True, exist_ok=True)
    (out_dir / "target").mkdir(parents=True, exist_ok=True)

    jobs = [(g, c) for g, c in all_combinations(out_of_domain=True) if g in groups]
    root = np.random.SeedSequence(seed)
    item_seeds = root.spawn(len(jobs) * per_combo)
    items: list[BenchItem] = []
    cache: dict[Path, np.ndarray] = {}
    bar = tqdm(total=len(jobs) * per_combo, desc="bench make", unit="img", disable=not progress)
    for k, (group, combo) in enumerate(jobs):
        for j in range(per_combo):
            index = k * per_combo + j
            source = sources[index % len(sources)]
            if source not in cache:
                cache[source] = read_image(source)
            clean = cache[source]
            # Odd sizes would not survive a x4 downscale and upscale; crop to a multiple of 4.
            h, w = clean.shape[:2]
            clean = clean[: h - h % 4, : w - w % 4]
            item_seed = int(item_seeds[index].generate_state(1)[0])
            degraded, steps = synthesis(clean, combo, item_seed)
            name = f"{group}_{'+'.join(combo)}_{j:03d}_{source.stem}.png"
            write_image(degraded, out_dir / "input" / name)
            write_image(clean, out_dir / "target" / name)
            items.append(BenchItem(name=name, group=group, combination=combo, source=source.name, seed=item_seed, steps=steps))
            bar.update()
    bar.close()
    manifest = {
        "protocol": protocol,
        "seed": seed,
        "per_combo": per_combo,
        "clean_dir": str(clean_dir),
        "items": [
            {
                "name": it.name,
                "group": it.group,
                "combination": list(it.combination),
                "source": it.source,
                "seed": it.seed,
                "steps": it.steps,
            }
            for it in items
        ],
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return items


def load_manifest(bench_dir: str | Path) -> list[BenchItem]:
    """Read a benchmark folder's manifest."""
    path = Path(bench_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{bench_dir}: no {MANIFEST}; make one with `tir-agent bench make`")
    data = json.loads(path.read_text())
    return [
        BenchItem(
            name=it["name"],
            group=it["group"],
            combination=tuple(it["combination"]),
            source=it["source"],
            seed=it["seed"],
            steps=it["steps"],
        )
        for it in data["items"]
    ]


def make_pairs_benchmark(
    input_dir: str | Path,
    target_dir: str | Path,
    out_dir: str | Path,
    *,
    degradations: tuple[str, ...],
    group: str = "real",
) -> list[BenchItem]:
    """A benchmark folder from real degraded/clean pairs, matched by sorted file name (e.g. PolyU's
    ``*_real.JPG`` and ``*_mean.JPG``); ``degradations`` names what the inputs suffer from."""
    inputs, targets = list_images(input_dir), list_images(target_dir)
    if not inputs or len(inputs) != len(targets):
        raise ImageError(f"{input_dir} has {len(inputs)} images and {target_dir} has {len(targets)}: they must pair up one to one")
    out_dir = Path(out_dir)
    (out_dir / "input").mkdir(parents=True, exist_ok=True)
    (out_dir / "target").mkdir(parents=True, exist_ok=True)
    items = []
    for source, target_path in zip(inputs, targets):
        degraded, clean = read_image(source), read_image(target_path)
        if degraded.shape != clean.shape:
            raise ImageError(f"{source.name} and {target_path.name} differ in size")
        name = f"{group}_{source.stem}.png"
        write_image(degraded, out_dir / "input" / name)
        write_image(clean, out_dir / "target" / name)
        items.append(BenchItem(name=name, group=group, combination=tuple(degradations), source=source.name, seed=0, steps=[]))
    manifest = {
        "protocol": f"real pairs from {input_dir} and {target_dir}",
        "items": [{"name": i.name, "group": i.group, "combination": list(i.combination), "source": i.source, "seed": 0, "steps": []} for i in items],
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return items
