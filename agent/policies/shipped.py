"""The policy this project trained and ships (``agent/weights/policy/``): the default of restore, eval and demo.

A Qwen3-VL trained from scratch with the project's own pipeline (SFT on searched and perturbed
trajectories, then GRPO with the adaptive reward); ``make policy`` reproduces it, and its card
(``agent/weights/policy/card.md``) records the recipe and its benchmark figures.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tiragent.agent.policies.qwen import QwenVLPolicy
from tiragent.agent.policy import register_policy
from tiragent.errors import TirAgentError

SHIPPED = "tir"


def shipped_policy_dir() -> Path:
    return Path(str(resources.files("tiragent.agent") / "weights" / "policy"))


@register_policy(SHIPPED)
def shipped_policy(**options: object) -> QwenVLPolicy:
    folder = shipped_policy_dir()
    if not (folder / "config.json").is_file():
        raise TirAgentError(f"the shipped policy is missing from {folder}: rebuild it with `make policy`, or pass --policy exhaustive")
    policy = QwenVLPolicy(checkpoint=str(folder), **options)  # type: ignore[arg-type]
    policy.name = SHIPPED
    return policy


@register_policy(f"{SHIPPED}-shuffled-tools")
def shipped_policy_shuffled_tools(**options: object) -> QwenVLPolicy:
    """The shipped policy with its tool list in a random order per episode (seeded): the ablation of the tool order."""
    policy = shipped_policy(shuffle_tools=0, **options)
    policy.name = f"{SHIPPED}-shuffled-tools"
    return policy
