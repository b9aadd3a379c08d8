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
from typing import Any

from tiragent.images import list_images, read_image


def reply_logprob(policy: Any, tools: list[dict[str, Any]], reply: dict[str, Any]) -> float:
    """Sum of the log-probabilities of ``reply``'s tokens after the policy's current messages."""
    import torch

    processor = policy.processor
    images = [p["image"] for m in policy.messages if isinstance(m.get("content"), list) for p in m["content"] if p.get("type") == "image"]
    prompt = processor.apply_chat_template(policy.messages, tools=tools, add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template([*policy.messages, reply], tools=tools, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the template renders the prompt differently once a reply follows it")
    start = processor(text=[prompt], images=images or None, return_tensors="pt")["input_ids"].shape[1]
    inputs = processor(text=[full], images=images or None, return_tensors="pt").to(policy.device)
    with torch.inference_mode():
        logits = policy.model(**inputs).logits[0].float()
    ids = inputs["input_ids"][0, start:]
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    stops = (ids == end).nonzero()
    length = int(stops[0]) + 1 if len(stops) else len(ids)
    logprobs = torch.log_softmax(logits[start - 1 : start - 1 + length], -1)
    return float(logprobs[torch.arange(length), ids[:length]].sum())


async def first_steps(policy_dir: str, paths: list[Path]) -> list[tuple[Path, str, dict[str, float]]]:
    from tiragent.agent.conversation import call_turn, stop_turn, tool_schemas
    from tiragent.agent.policies.qwen import QwenVLPolicy
    from tiragent.agent.policy import Observation
    from tiragent.agent.session import open_session

    policy = QwenVLPolicy(policy_dir, device="cpu")
    out = []
    async with open_session() as session:
        space = await session.action_space()
        tools = tool_schemas(space, short=policy.views.short_prompt)
        candidates = {"STOP": stop_turn()} | {f"{t}.{m}": call_turn(t, {"model": m}) for t, models in space.models.items() for m in models}
        for path in paths:
            image = read_image(path)
            image_id = await session.load(image)
            size = (image.shape[1], image.shape[0])
            await policy.reset(Observation(original_id=image_id, current_id=image_id, space=space, session=session, original_size=size))
            said = policy.messages[-1]["content"][-1]["text"].split("\n", 1)[-1] if policy.views.perception else ""
            out.append((path, said, {name: reply_logprob(policy, tools, reply) for name, reply in candidates.items()}))
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
