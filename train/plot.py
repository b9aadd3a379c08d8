"""Plots of a training run's trends: ``tir-agent train plot RUN_DIR``.

Reads ``RUN_DIR/log.jsonl`` (one line per step, written by ``tir-agent train rl``; an SFT run's
``trainer_state.json`` log works too) and draws one panel per family of figures: the loss, the
reward, each reward dimension's improvement, the adaptive weights, tool calls and invalid calls per
episode, the diversity of each group of rollouts, and the held-out evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tiragent.errors import TirAgentError

PANELS: list[tuple[str, str, list[str]]] = [
    ("loss", "loss", ["loss", "kl"]),
    ("reward", "reward (mean over the step's episodes)", ["reward", "reward_std"]),
    ("improvement", "improvement over the input, normalised", ["improvement/"]),
    ("weights", "adaptive weight of each dimension", ["weights/"]),
    ("episodes", "per episode", ["episodes/tool_calls", "episodes/invalid_rate", "episodes/stop_rate"]),
    ("diversity", "per group of rollouts", ["diversity/"]),
    ("eval", "held-out evaluation (greedy)", ["eval/"]),
    ("rollout", "rollout throughput", ["rollout/episodes_per_second"]),
]


def read_log(run: Path) -> list[dict[str, Any]]:
    run = Path(run)
    if (run / "log.jsonl").is_file():
        return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    if (run / "trainer_state.json").is_file():
        return [{"step": e.get("step", 0), **e} for e in json.loads((run / "trainer_state.json").read_text())["log_history"]]
    raise TirAgentError(f"{run} has no log.jsonl (nor trainer_state.json): is it the --out folder of a training run?")


def _series(rows: list[dict[str, Any]], prefixes: list[str]) -> dict[str, tuple[list[float], list[float]]]:
    """Every numeric key matching one of ``prefixes`` (a key, or a family ending in '/'), as (steps, values)."""
    found: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        for key, value in row.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if any(key == p or (p.endswith("/") and key.startswith(p)) for p in prefixes):
                steps, values = found.setdefault(key, ([], []))
                steps.append(row["step"])
                values.append(float(value))
    return found


def plot_run(run: Path, out: Path | None = None) -> list[Path]:
    """One PNG per panel that has data, and ``trends.png`` with all of them; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_log(run) if "train_runtime" not in r]
    out = Path(out) if out else Path(run) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    panels = [(name, title, s) for name, title, prefixes in PANELS if (s := _series(rows, prefixes))]
    if not panels:
        raise TirAgentError(f"{run}: the log has no figures to plot yet")
    columns = 2
    figure, axes = plt.subplots((len(panels) + 1) // columns, columns, figsize=(11, 3.2 * ((len(panels) + 1) // columns)), squeeze=False)
    written = []
    for ax, (name, title, series) in zip(axes.flat, panels):
        for key, (steps, values) in sorted(series.items()):
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        single, one = plt.subplots(figsize=(6, 3.5))
        for key, (steps, values) in sorted(series.items()):
            one.plot(steps, values, label=key)
        one.set_title(title)
        one.set_xlabel("step")
        one.legend(fontsize=7)
        one.grid(alpha=0.3)
        single.tight_layout()
        path = out / f"{name}.png"
        single.savefig(path, dpi=100)
        plt.close(single)
        written.append(path)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.tight_layout()
    path = out / "trends.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [path, *written]
