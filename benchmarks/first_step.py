"""What a Qwen-VL policy would do first on each image: the log-likelihood of every tool call it could make, and of STOP.

The policy is given the image as it acts (its own views and, if it reads one, the detector's text), then every
candidate first reply is scored whole (through its ``<|im_end|>``), so the ranking shows what it prefers and by how
much, and why it did what it did. This is how the shipped policy was found to read a low-resolution photo's size
(its number of visual tokens) instead of the detector's ``sr 1.0``: docs/policy.md, "Views of a fixed size".

    python benchmarks/first_step.py IMAGE_OR_FOLDER... [--policy agent/weights/policy] [--top 5]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from tiragent.images import list_images, read_image


async def first_steps(policy_dir: str, paths: list[Path]) -> list[tuple[Path, str, dict[str, float]]]:
    from tiragent.agent.actions import Action, Stop
    from tiragent.agent.conversation import tool_schemas
    from tiragent.agent.policies.qwen import QwenVLPolicy
    from tiragent.agent.policy import Observation
    from tiragent.agent.session import open_session

    policy = QwenVLPolicy(policy_dir, device="cpu")
    out = []
    async with open_session() as session:
        space = await session.action_space()
        tools = tool_schemas(space, short=policy.views.short_prompt)
        replies: list[Action | Stop] = [Stop(reason="STOP"), *(Action(t, m) for t, models in space.models.items() for m in models)]
        names = [r.task + "." + r.model if isinstance(r, Action) else "STOP" for r in replies]
        for path in paths:
            image = read_image(path)
            image_id = await session.load(image)
            size = (image.shape[1], image.shape[0])
            await policy.reset(Observation(original_id=image_id, current_id=image_id, space=space, session=session, original_size=size))
            said = policy.messages[-1]["content"][-1]["text"].split("\n", 1)[-1] if policy.views.perception else ""
            out.append((path, said, dict(zip(names, policy.score(tools, replies), strict=True))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, nargs="+", help="images, or folders of images")
    parser.add_argument("--policy", default=str(Path(__file__).resolve().parent.parent / "agent" / "weights" / "policy"))
    parser.add_argument("--top", type=int, default=5, help="candidates shown per image")
    args = parser.parse_args()
    paths = [p for given in args.images for p in (list_images(given) if given.is_dir() else [given])]
    if not paths:
        parser.error("no images given")
    print(f"First step of {args.policy}: log-likelihood of each whole reply (higher is preferred)\n")
    print("| image | size | perception | best | then |")
    print("|---|---|---|---|---|")
    for path, said, scores in asyncio.run(first_steps(args.policy, paths)):
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        size = "x".join(map(str, read_image(path).shape[1::-1]))
        rest = ", ".join(f"{k} {v:.1f}" for k, v in ranked[1 : args.top])
        print(f"| {path.name} | {size} | {said or '-'} | {ranked[0][0]} {ranked[0][1]:.1f} | {rest} |")


if __name__ == "__main__":
    main()
