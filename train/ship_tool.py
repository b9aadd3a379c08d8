"""Ship retrained tool weights: check them and copy them into the package under the name the server loads.

A weights file written by ``tir-agent tools train`` carries its card (what it restores, how it was trained, its
evaluation); shipping keeps that card as it is, so what the server describes is what the trainer wrote.
``self_ensemble=True`` (``tools ship --self_ensemble``) sets the network's inference-only geometric self-ensemble in
the shipped copy's config (the mean over the eight flips and rotations; ``server.nets.self_ensemble``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tiragent.errors import ParameterError
from tiragent.server.nets import WeightsError, load_net, read_info
from tiragent.server.tools.learned import SHIPPED, WEIGHTS_DIR


@dataclass(frozen=True)
class Shipped:
    tool: str
    path: Path
    before: dict | None
    """The evaluation of the weights it replaced (None: there were none, or they had no evaluation)."""
    after: dict | None

    def summary(self) -> str:
        line = f"{self.tool}: {self.path}"
        if self.after:
            new = f"{self.after['data']} {self.after['psnr_in']:.2f} -> {self.after['psnr_out']:.2f} dB"
            old = f" (replaced: {self.before['psnr_out']:.2f} dB)" if self.before and self.before.get("data") == self.after["data"] else ""
            line += f"; {new}{old}"
        return line


def _copy_with_self_ensemble(source: Path, target: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), "pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors handle is not a dict)
    config = json.loads(metadata.get("config", "{}"))
    if "self_ensemble" not in config:
        raise ParameterError(f"cannot ship {source} with --self_ensemble: its architecture ({metadata.get('arch')}) has no self-ensemble")
    config["self_ensemble"] = True
    metadata["config"] = json.dumps(config)
    save_file(tensors, str(target), metadata=metadata)


def ship_tool(weights: Path, into: Path | None = None, self_ensemble: bool = False) -> Shipped:
    """Copy one trained weights file into ``into`` (default: the package's weights) as the shipped tool its card names;
    ``self_ensemble``: with the network's geometric self-ensemble set for inference."""
    try:
        card = read_info(weights).card
        load_net(weights)
    except WeightsError as err:
        raise ParameterError(f"cannot ship {weights}: {err}") from None
    tool = card.get("tool")
    if not tool:
        raise ParameterError(f"cannot ship {weights}: its card names no tool (not written by `tir-agent tools train`?)")
    stem = tool.replace(".", "_")
    if stem not in SHIPPED:
        raise ParameterError(f"cannot ship {weights}: {tool} is not a shipped tool ({', '.join(sorted(SHIPPED))})")
    target = Path(into or WEIGHTS_DIR) / f"{stem}.safetensors"
    before = None
    if target.is_file():
        try:
            before = read_info(target).card.get("evaluation")
        except WeightsError:
            before = None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    if self_ensemble:
        _copy_with_self_ensemble(weights, partial)
    else:
        shutil.copyfile(weights, partial)
    os.replace(partial, target)
    return Shipped(tool, target, before, card.get("evaluation"))
