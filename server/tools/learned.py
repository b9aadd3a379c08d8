"""Learned tools: the project's own small networks, trained by ``tir-agent tools train`` on
CBSD68 (see docs/learned_tools.md) and shipped as fp16 safetensors in ``tiragent/server/weights``.

Each weights file describes itself (architecture, config, training card), so shipping one
more network is one file in ``weights/`` and one line in ``SHIPPED``. They run in the shared
pool like user checkpoints: batched, tiled, in half precision on a GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tiragent.server.nets import WeightsError, descriptor, load_net, read_info
from tiragent.server.registry import Cost, register_torch_tool

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

SHIPPED: dict[str, Cost] = {
    # file stem (= "<task>_<name>") -> cost of one 512x512 call on a 2-core CPU
    "denoise_unet": Cost.MEDIUM,
    "motion_deblur_unet": Cost.MEDIUM,
    "motion_deblur_kernel_wiener": Cost.MEDIUM,
    "defocus_deblur_unet": Cost.MEDIUM,
    "derain_unet": Cost.MEDIUM,
    "dehaze_unet": Cost.MEDIUM,
    "dehaze_hazenet": Cost.MEDIUM,
    "dejpeg_unet": Cost.MEDIUM,
    "lowlight_unet": Cost.MEDIUM,
    "lowlight_curve": Cost.LOW,
    "sr_srnet_x4": Cost.MEDIUM,  # eight passes: its self-ensemble
    "sr_srnet_x2": Cost.MEDIUM,
}

log = logging.getLogger(__name__)


def register_weights(path: Path, cost: Cost, replace: bool = False) -> str:
    """Register one weights file as a tool named by its card (``replace``: over a tool of that name); returns the tool key."""
    info = read_info(path)
    card = info.card
    task, name = card["tool"].split(".", 1)
    trained = f" Trained by tir-agent on {card.get('data', '?')} for {card.get('steps', '?')} steps; {card.get('parameters', 0) / 1e6:.1f} M parameters."
    register_torch_tool(task, name, cost=cost, descriptor=descriptor(info.config), description=card.get("description", "") + trained, replace=replace)(
        lambda: load_net(path)
    )
    return f"{task}.{name}"


def register_shipped(weights_dir: Path = WEIGHTS_DIR) -> dict[str, str]:
    """Register every shipped network found intact in ``weights_dir``; returns {file stem: why it is missing}.

    A damaged or missing file loses that tool, not the server: the task's default falls to the next model.
    """
    missing = {}
    for stem, cost in SHIPPED.items():
        try:
            register_weights(weights_dir / f"{stem}.safetensors", cost)
        except WeightsError as err:
            log.warning("learned tool %s is not available: %s", stem, err)
            missing[stem] = str(err)
    return missing


register_shipped()
