"""The project's vocabulary: the eight restoration tasks and the degradation each one undoes.

Every other module (the server's tool registry, the degradation synthesis, the detector,
the policies, the tokenizer of the small policy) imports these names from here.
"""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    """A restoration task: one MCP tool, whose ``model`` argument picks the tool that runs."""

    DENOISE = "denoise"
    MOTION_DEBLUR = "motion_deblur"
    DEFOCUS_DEBLUR = "defocus_deblur"
    DERAIN = "derain"
    DEHAZE = "dehaze"
    DEJPEG = "dejpeg"
    SR = "sr"
    LOWLIGHT = "lowlight"


TASK_OF_DEGRADATION: dict[str, Task] = {
    # degradation name (as in tiragent.eval.degradations and benchmark manifests) -> the task that undoes it
    "lowres": Task.SR,
    "noise": Task.DENOISE,
    "jpeg": Task.DEJPEG,
    "dark": Task.LOWLIGHT,
    "haze": Task.DEHAZE,
    "motion": Task.MOTION_DEBLUR,
    "defocus": Task.DEFOCUS_DEBLUR,
    "rain": Task.DERAIN,
}

DEGRADATION_OF_TASK: dict[Task, str] = {task: name for name, task in TASK_OF_DEGRADATION.items()}

TASK_NAMES: tuple[str, ...] = tuple(t.value for t in Task)

TASK_TOOL_META = "tir-agent/task"
"""Key of a task tool's MCP ``_meta``: ``{"task", "default", "models": {name: {cost, device, learned, scale,
default, params}}}``. Clients (the agent, the oracle, evaluation) read these facts as data, never from prose."""


def is_task(name: str) -> bool:
    return name in Task._value2member_map_
