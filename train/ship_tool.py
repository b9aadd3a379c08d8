"""Ship retrained tool weights: check them and copy them into the package under the name the server loads.

A weights file written by ``tir-agent tools train`` carries its card (what it restores, how it was trained, its
evaluation); shipping keeps that card as it is, so what the server describes is what the trainer wrote.
``self_ensemble=True`` (``tools ship --self_ensemble``) sets the network's inference-only geometric self-ensemble in
the shipped copy's config (the mean over the eight flips and rotations; ``server.nets.self_ensemble``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from tiragent.errors import ParameterError
from tiragent.server.nets import WeightsError, load_net, read_info, save_net
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


def ship_tool(weights: Path, into: Path | None = None, self_ensemble: bool = False) -> Shipped:
    """Copy one trained weights file into ``into`` (default: the package's weights) as the shipped tool its card names;
    ``self_ensemble``: with the network's geometric self-ensemble set for inference."""
    try:
        card = read_info(weights).card
        net = load_net(weights)
    except WeightsError as err:
        raise ParameterError(f"cannot ship {weights}: {err}") from None
    if self_ensemble and not hasattr(net.config, "self_ensemble"):
        raise ParameterError(f"cannot ship {weights} with --self_ensemble: its architecture ({type(net).__name__}) has no self-ensemble")
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
    if self_ensemble:  # the same tensors and card, written by the one writer of weights files, its config flag set
        net.config = replace(net.config, self_ensemble=True)
        save_net(net, partial, card)
    else:
        shutil.copyfile(weights, partial)
    os.replace(partial, target)
    return Shipped(tool, target, before, card.get("evaluation"))
