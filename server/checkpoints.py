"""Users' own checkpoints as tools: a TOML file maps a tool name and task to a checkpoint, and
spandrel detects the architecture (SwinIR, HAT, SCUNet, NAFNet, DRUNet, DnCNN, ...; Restormer,
MPRNet and others with the optional ``spandrel-extra-arches``) and its size requirements.

    [[tool]]
    name = "swinir_x4"
    task = "sr"
    checkpoint = "weights/001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth"   # relative to this file
    cost = "high"                                                        # optional
    description = "SwinIR-M x4, trained on DF2K."                        # optional
    sha256 = "..."                                                       # optional: verified at load
"""

from __future__ import annotations

import functools
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tiragent.errors import TirAgentError
from tiragent.server.registry import Cost, ModelDescriptor, register_torch_tool
from tiragent.tasks import TASK_NAMES, Task, is_task


class CheckpointError(TirAgentError, ValueError):
    pass


@dataclass(frozen=True)
class CheckpointEntry:
    name: str
    task: Task
    checkpoint: Path
    cost: Cost
    description: str
    sha256: str | None = None


def read_tools_config(path: str | Path) -> tuple[list[CheckpointEntry], list[str]]:
    """The entries of a tools config, and a message for each entry that cannot be used (the others still load).

    Raises CheckpointError when the file itself cannot be read.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read the tools config ({err})") from None
    raw_entries = data.get("tool", [])
    if not isinstance(raw_entries, list) or not all(isinstance(e, dict) for e in raw_entries):
        raise CheckpointError(f"{path}: 'tool' must be an array of tables ([[tool]] entries)")
    entries, errors = [], []
    for i, raw in enumerate(raw_entries, start=1):
        try:
            entries.append(_entry(path, i, raw))
        except CheckpointError as err:
            errors.append(str(err))
    return entries, errors


def _entry(path: Path, number: int, raw: dict[str, Any]) -> CheckpointEntry:
    missing = [k for k in ("name", "task", "checkpoint") if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: [[tool]] number {number} lacks {', '.join(missing)}")
    name = raw["name"]
    unknown = sorted(set(raw) - set(CheckpointEntry.__dataclass_fields__))
    if unknown:
        raise CheckpointError(f"{path}: tool {name!r} has unknown field {', '.join(map(repr, unknown))}; fields: {', '.join(CheckpointEntry.__dataclass_fields__)}")
    if not is_task(raw["task"]):
        raise CheckpointError(f"{path}: tool {name!r} has unknown task {raw['task']!r}; tasks: {', '.join(TASK_NAMES)}")
    cost = raw.get("cost", "high")
    if cost not in Cost._value2member_map_:
        raise CheckpointError(f"{path}: tool {name!r} has unknown cost {cost!r}; costs: {', '.join(c.value for c in Cost)}")
    checkpoint = Path(raw["checkpoint"]).expanduser()
    return CheckpointEntry(
        name=name,
        task=Task(raw["task"]),
        checkpoint=checkpoint if checkpoint.is_absolute() else path.parent / checkpoint,
        cost=Cost(cost),
        description=raw.get("description", ""),
        sha256=raw.get("sha256") or None,
    )


EXTRA_ARCHES_HINT = "Restormer, MPRNet, MIRNet2, SRFormer and others need `pip install 'tir-agent[extra-arches]'` (non-commercial licences)"


@functools.cache
def _install_extra_arches() -> bool:
    """Add spandrel-extra-arches to spandrel's registry once, if the user installed it; returns whether it is there.

    It is an optional extra, not a dependency: the code of its architectures is licensed for
    non-commercial use only, so installing it is the user's choice.
    """
    try:
        with warnings.catch_warnings():  # some of its modules call the deprecated torch.jit.script at import
            warnings.simplefilter("ignore", FutureWarning)
            import spandrel_extra_arches
    except ImportError:
        return False
    spandrel_extra_arches.install(ignore_duplicates=True)
    return True


def load_checkpoint(entry: CheckpointEntry) -> ModelDescriptor:
    """Load and detect one checkpoint, and register it as a tool; raises CheckpointError naming the problem."""
    loaded = _load(entry)
    descriptor = descriptor_of(loaded)
    description = entry.description or f"{loaded.architecture.name} from {entry.checkpoint.name} (user checkpoint, x{loaded.scale})."
    del loaded  # the pool builds its own copy when the tool is first called

    def build() -> torch.nn.Module:
        # Loaded from the file on every build, so that a model the pool evicts is really freed.
        return SpandrelModule(_load(entry))

    register_torch_tool(entry.task, entry.name, cost=entry.cost, descriptor=descriptor, description=description, replace=True)(build)
    return descriptor


def _load(entry: CheckpointEntry) -> Any:
    """The checked checkpoint as a spandrel ``ImageModelDescriptor``; raises CheckpointError naming the problem."""
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    if not entry.checkpoint.is_file():
        raise CheckpointError(f"tool {entry.name!r}: checkpoint {entry.checkpoint} does not exist")
    if entry.sha256 is not None:
        from tiragent.server.sources import ChecksumError, verify_file

        try:
            verify_file(entry.checkpoint, entry.sha256)
        except ChecksumError as err:
            raise CheckpointError(f"tool {entry.name!r}: {err}") from None
    extra_arches = _install_extra_arches()
    try:
        loaded = ModelLoader().load_from_file(entry.checkpoint)
    except UnsupportedModelError:
        hint = "" if extra_arches else f" ({EXTRA_ARCHES_HINT})"
        raise CheckpointError(f"tool {entry.name!r}: {entry.checkpoint} is not an architecture spandrel knows{hint}") from None
    except Exception as err:  # truncated or corrupt files surface as many error types
        raise CheckpointError(f"tool {entry.name!r}: cannot load {entry.checkpoint} ({type(err).__name__}: {err})") from None
    if not isinstance(loaded, ImageModelDescriptor):
        raise CheckpointError(f"tool {entry.name!r}: {entry.checkpoint} is a {loaded.purpose} model, not an image-to-image one")
    if (loaded.input_channels, loaded.output_channels) not in ((3, 3), (1, 1)):
        raise CheckpointError(f"tool {entry.name!r}: models with {loaded.input_channels} input channels are not supported")
    return loaded.eval()


def descriptor_of(loaded: Any) -> ModelDescriptor:
    """spandrel's facts about an architecture, whole: scale, size requirements, tiling advice, precisions."""
    from spandrel import ModelTiling

    size = loaded.size_requirements
    tiling = {ModelTiling.SUPPORTED: "supported", ModelTiling.DISCOURAGED: "discouraged", ModelTiling.INTERNAL: "internal"}[loaded.tiling]
    return ModelDescriptor(
        scale=loaded.scale,
        multiple_of=max(1, size.multiple_of),
        min_size=max(1, size.minimum),
        square=size.square,
        tile_size=None if tiling == "internal" else 512,
        tiling=tiling,  # type: ignore[arg-type]
        supports_half=loaded.supports_half,
        supports_bfloat16=loaded.supports_bfloat16,
    )


class SpandrelModule(torch.nn.Module):
    """A spandrel model called the way spandrel calls it: through ``ImageModelDescriptor.__call__``, which applies
    the architecture's calling convention (DRUNet's noise-level channel, FBCNN's tuple output), its padding and
    clamping. spandrel's convention is one image per call, so a batch runs image by image; a one-channel model
    runs on each colour channel."""

    def __init__(self, loaded: Any) -> None:
        super().__init__()
        self.model = loaded.model  # a submodule: .to() moves it and the pool counts its parameters
        self._descriptor = loaded
        self.per_channel = loaded.input_channels == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for image in x.split(1):
            if self.per_channel:
                outputs.append(torch.cat([self._descriptor(image[:, c : c + 1]) for c in range(image.shape[1])], dim=1))
            else:
                outputs.append(self._descriptor(image))
        return torch.cat(outputs)


def register_checkpoints(config: str | Path) -> tuple[list[str], list[str]]:
    """Register every tool of a config; returns (registered keys, error messages). One bad entry never stops the rest."""
    registered = []
    try:
        entries, errors = read_tools_config(config)
    except CheckpointError as err:
        return [], [str(err)]
    for entry in entries:
        try:
            load_checkpoint(entry)
            registered.append(f"{entry.task}.{entry.name}")
        except CheckpointError as err:
            errors.append(str(err))
    return registered, errors
