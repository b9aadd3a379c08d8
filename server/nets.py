"""The project's own restoration networks, and their safetensors files.

Two small architectures, each a registered class with a typed config:

- ``resunet``: a residual UNet for same-size tasks. The input is pixel-unshuffled first (as in
  FFDNet), so every convolution runs at half resolution or less; the network predicts a
  correction that is added to the input.
- ``srnet``: residual blocks at low resolution, then pixel shuffle, added to a bicubic upscale.

A weights file carries its architecture name, config and training card in the safetensors
metadata, so ``load_net(path)`` needs nothing else; ``descriptor()`` says what the pool must know.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tiragent.errors import TirAgentError
from tiragent.server.curve_net import CurveNet, CurveNetConfig
from tiragent.server.detector_net import DetectorNet, DetectorNetConfig
from tiragent.server.haze_net import HazeNet, HazeNetConfig
from tiragent.server.kernel_net import MotionKernelNet, MotionKernelNetConfig
from tiragent.server.registry import ModelDescriptor


class WeightsError(TirAgentError, ValueError):
    pass


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x), inplace=True))


def _self_ensemble_field() -> Any:
    return field(
        default=False,
        metadata={"help": "At inference, average the outputs for the eight flips and rotations of the input (eight times the compute; never in training)."},
    )


@dataclass(frozen=True)
class ResUNetConfig:
    width: int = field(default=32, metadata={"help": "Channels at the first level; each level below doubles them."})
    blocks: tuple[int, ...] = field(default=(1, 1, 2), metadata={"help": "Residual blocks per level, top to bottom."})
    unshuffle: int = field(default=2, metadata={"help": "Pixel-unshuffle factor applied to the input before the first convolution."})
    self_ensemble: bool = _self_ensemble_field()

    scale = 1
    tile_size = 512
    supports_half = True

    @property
    def multiple_of(self) -> int:
        return self.unshuffle * 2 ** (len(self.blocks) - 1)


class ResUNet(nn.Module):
    """Residual UNet on a pixel-unshuffled input; output = input + predicted correction."""

    def __init__(self, config: ResUNetConfig) -> None:
        super().__init__()
        self.config = config
        u, widths = config.unshuffle, [config.width * 2**i for i in range(len(config.blocks))]
        self.head = nn.Sequential(nn.PixelUnshuffle(u), nn.Conv2d(3 * u * u, widths[0], 3, padding=1))
        self.encoders = nn.ModuleList(nn.Sequential(*[ResBlock(w) for w in [c] * n]) for c, n in zip(widths, config.blocks))
        self.downs = nn.ModuleList(nn.Conv2d(c, 2 * c, 2, stride=2) for c in widths[:-1])
        self.ups = nn.ModuleList(nn.Sequential(nn.Conv2d(2 * c, 4 * c, 1), nn.PixelShuffle(2)) for c in widths[:-1])
        self.decoders = nn.ModuleList(ResBlock(c) for c in widths[:-1])
        self.tail = nn.Sequential(nn.Conv2d(widths[0], 3 * u * u, 3, padding=1), nn.PixelShuffle(u))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.self_ensemble and not self.training:
            return self_ensemble(self.restore, x)
        return self.restore(x)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(x)
        skips = []
        for i, encoder in enumerate(self.encoders):
            y = encoder(y)
            if i < len(self.downs):
                skips.append(y)
                y = self.downs[i](y)
        for up, decoder, skip in zip(reversed(self.ups), reversed(self.decoders), reversed(skips)):
            y = decoder(up(y) + skip)
        return x + self.tail(y)


@dataclass(frozen=True)
class SRNetConfig:
    scale: int = field(default=4, metadata={"help": "Upscaling factor (2 or 4)."})
    width: int = field(default=48, metadata={"help": "Channels of the residual blocks."})
    blocks: int = field(default=8, metadata={"help": "Residual blocks at low resolution."})
    self_ensemble: bool = _self_ensemble_field()

    multiple_of = 1
    tile_size = 512
    supports_half = True


class SRNet(nn.Module):
    """Residual blocks at low resolution, pixel shuffle up, added to a bicubic upscale."""

    def __init__(self, config: SRNetConfig) -> None:
        super().__init__()
        self.config = config
        s, w = config.scale, config.width
        self.head = nn.Conv2d(3, w, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(w) for _ in range(config.blocks)], nn.Conv2d(w, w, 3, padding=1))
        self.tail = nn.Sequential(nn.Conv2d(w, 3 * s * s, 3, padding=1), nn.PixelShuffle(s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.self_ensemble and not self.training:
            return self_ensemble(self.upscale, x)
        return self.upscale(x)

    def upscale(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(x)
        base = F.interpolate(x, scale_factor=self.config.scale, mode="bicubic", align_corners=False)
        return base + self.tail(y + self.body(y))


def self_ensemble(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The mean of ``fn`` over the eight flips and rotations of ``x`` (NCHW), each output turned back (EDSR's
    geometric self-ensemble): for networks whose task has no preferred orientation."""
    total = torch.zeros((), dtype=x.dtype, device=x.device)
    for turns in range(4):
        for flip in (False, True):
            t = torch.rot90(x, turns, (2, 3))
            y = fn(t.flip(3) if flip else t)
            total = total + torch.rot90(y.flip(3) if flip else y, -turns, (2, 3))
    return total / 8


@dataclass(frozen=True)
class Architecture:
    config: type
    build: Callable[[Any], nn.Module]


ARCHITECTURES: dict[str, Architecture] = {
    "resunet": Architecture(ResUNetConfig, ResUNet),
    "srnet": Architecture(SRNetConfig, SRNet),
    "motionkernel": Architecture(MotionKernelNetConfig, MotionKernelNet),
    "hazenet": Architecture(HazeNetConfig, HazeNet),
    "curvenet": Architecture(CurveNetConfig, CurveNet),
    "detector": Architecture(DetectorNetConfig, DetectorNet),
}

NetConfig = ResUNetConfig | SRNetConfig | MotionKernelNetConfig | HazeNetConfig | CurveNetConfig | DetectorNetConfig


def make_config(arch: str, **config: Any) -> Any:
    """The typed config of an architecture; raises WeightsError naming an unknown architecture or option."""
    if arch not in ARCHITECTURES:
        raise WeightsError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    fields = spec.config.__dataclass_fields__
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise WeightsError(f"architecture {arch!r} has no option {', '.join(unknown)}; options: {', '.join(fields)}")
    return spec.config(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


def build_net(arch: str, **config: Any) -> nn.Module:
    typed = make_config(arch, **config)
    return ARCHITECTURES[arch].build(typed)


def net_arch(net: nn.Module) -> str:
    return next(name for name, spec in ARCHITECTURES.items() if isinstance(net, spec.build))  # type: ignore[arg-type]


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def descriptor(config: NetConfig) -> ModelDescriptor:
    """What the pool needs to run a network: scale, padding multiple, tiling (32 px overlap) and half precision."""
    return ModelDescriptor(
        scale=config.scale,
        multiple_of=config.multiple_of,
        tile_size=config.tile_size,
        tiling="supported" if config.tile_size is not None else "internal",
        supports_half=config.supports_half,
        supports_bfloat16=config.supports_half,
        cpu_step=getattr(config, "cpu_step", False),
    )


def save_net(net: nn.Module, path: str | Path, card: dict[str, Any] | None = None) -> None:
    """Write fp16 safetensors (inference weights) with the architecture, config and card as metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in net.state_dict().items()}
    metadata = {"arch": net_arch(net), "config": json.dumps(asdict(net.config)), "card": json.dumps(card or {})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file says about itself, read from its header without loading the tensors."""

    arch: str
    config: NetConfig
    card: dict[str, Any]


def _open(path: Path) -> Any:
    from safetensors import safe_open

    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as err:  # safetensors raises its own error type, OSError or ValueError
        raise WeightsError(f"{path} is not a readable safetensors file ({err})") from None


def _info(path: Path, metadata: dict[str, str] | None) -> WeightsInfo:
    metadata = metadata or {}
    if "arch" not in metadata:
        raise WeightsError(f"{path} has no 'arch' metadata: not a tir-agent weights file")
    config = make_config(metadata["arch"], **json.loads(metadata.get("config", "{}")))
    return WeightsInfo(metadata["arch"], config, json.loads(metadata.get("card", "{}")))


def read_info(path: str | Path) -> WeightsInfo:
    path = Path(path)
    with _open(path) as f:
        return _info(path, f.metadata())


def load_net(path: str | Path) -> nn.Module:
    """Build the network a weights file describes and load its weights (float32, eval mode)."""
    path = Path(path)
    with _open(path) as f:
        info = _info(path, f.metadata())
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    net = ARCHITECTURES[info.arch].build(info.config)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise WeightsError(f"{path}: weights do not fit architecture {info.arch!r} ({err})") from None
    return net.eval()
