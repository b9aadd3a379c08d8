"""Tables and plots from per-image evaluation records: per group (A, B, C) and overall, averaged over images."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = [("psnr", "PSNR", 2), ("ssim", "SSIM", 4), ("ms_ssim", "MS-SSIM", 4), ("niqe", "NIQE", 3), ("piqe", "PIQE", 2),
           ("tool_calls", "tool calls", 2), ("seconds", "s / image", 2)]  # fmt: skip


def aggregate(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """policy -> group ('A', 'B', 'C', 'all') -> metric -> mean over images (and 'images': the count)."""
    buckets: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        buckets[(r["policy"], r["group"])].append(r)
        buckets[(r["policy"], "all")].append(r)
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (policy, group), rows in buckets.items():
        means = {key: float(np.mean([r[key] for r in rows if key in r])) for key, _, _ in COLUMNS if any(key in r for r in rows)}
        table[policy][group] = {**means, "images": len(rows)}
    return dict(table)


def _groups(table: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """'all', then each group by name when there is more than one."""
    names = sorted({g for v in table.values() for g in v} - {"all"})
    return ["all", *names] if len(names) > 1 else ["all"]


def markdown(table: dict[str, dict[str, dict[str, float]]]) -> str:
    groups = _groups(table)
    out = []
    for group in groups:
        title = "Overall" if group == "all" else f"Group {group}"
        count = next(int(v[group]["images"]) for v in table.values() if group in v)
        out += [f"### {title} ({count} images)", "", "| policy | " + " | ".join(c[1] for c in COLUMNS) + " |",
                "|---|" + "---:|" * len(COLUMNS)]  # fmt: skip
        for policy, groups_ in table.items():
            if group in groups_:
                row = groups_[group]
                out.append(f"| {policy} | " + " | ".join(f"{row[k]:.{d}f}" if k in row else "-" for k, _, d in COLUMNS) + " |")
        out.append("")
    return "\n".join(out)


LABELLED_UP_TO = 8
"""Up to this many policies each point is labelled where it lies; beyond, one legend names them."""


def plot(table: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(table)
    crowded = len(table) > LABELLED_UP_TO
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 4 + (0.25 * len(table) / 3 if crowded else 0)), sharey=False, squeeze=False)
    colours, markers = plt.get_cmap("tab20").colors, "osD^vP*Xh<>"
    for ax, group in zip(axes[0], groups):
        for i, (policy, groups_) in enumerate(table.items()):
            if group in groups_:
                row = groups_[group]
                ax.scatter(row["tool_calls"], row["psnr"], s=60, color=colours[i % len(colours)], marker=markers[i % len(markers)], label=policy)
                if not crowded:
                    ax.annotate(policy, (row["tool_calls"], row["psnr"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_title("overall" if group == "all" else f"group {group}")
        ax.set_xscale("symlog", linthresh=1)  # 0 to 1 linear, then logarithmic: one call and the oracle's hundreds both read
        ax.set_xlabel("tool calls per image")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
    if crowded:  # one legend below the panels: labels beside the points would overlap
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.03 + 0.045 * -(-len(labels) // 4), 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(records: list[dict[str, Any]], out_dir: Path, header: str = "") -> Path:
    """results.json (records and table), results.md and quality_vs_calls.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = aggregate(records)
    (out_dir / "results.json").write_text(json.dumps({"table": table, "records": records}, indent=1))
    (out_dir / "results.md").write_text(header + markdown(table))
    plot(table, out_dir / "quality_vs_calls.png")
    return out_dir / "results.md"
