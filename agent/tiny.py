"""A tiny Qwen-VL of the real architecture, random-initialised, with a tokenizer trained here.

For tests and CI: builds in seconds, downloads nothing, and saves a folder that
``QwenVLPolicy`` (and ``AutoProcessor`` / ``AutoModelForImageTextToText``) load like a
real checkpoint.

    python -m tiragent.agent.tiny OUT_DIR
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

from tiragent.tasks import TASK_NAMES

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
]  # fmt: skip


def chat_template() -> str:
    return (resources.files("tiragent.agent") / "templates" / "qwen_vl_tools.jinja").read_text()


# Only a hint to the tokenizer (names seen here become single tokens); any other name still tokenizes, byte by byte.
MODEL_WORDS = {
    "denoise": ["unet", "bm3d", "nlm", "wavelet"], "motion_deblur": ["kernel_wiener", "richardson_lucy", "unet", "wiener"],
    "defocus_deblur": ["unet", "richardson_lucy", "wiener"], "derain": ["unet", "inpaint", "opening"], "dehaze": ["hazenet", "cap", "dcp", "unet"],
    "dejpeg": ["unet", "bilateral", "deblock"], "sr": ["backprojection", "lanczos", "srnet_x2", "srnet_x4"], "lowlight": ["curve", "unet", "clahe", "gamma", "retinex"],
}  # fmt: skip
PARAM_WORDS = ["sigma", "angle", "iterations", "nsr", "radius", "width", "length", "max_tilt", "threshold", "beta", "t_min", "omega", "patch",
               "sigma_color", "diameter", "strength", "scale", "step", "clip_limit", "tiles", "target_mean", "gamma", "image_id"]  # fmt: skip


def _corpus() -> list[str]:
    """What the policy reads and writes: the template's own text, the prompts, short tool schemas, calls and results,
    so that a conversation takes a few hundred tokens rather than thousands."""
    import random
    import re

    from tiragent.agent.conversation import SEVERITY_WORDS, SYSTEM, SYSTEM_SHORT, TASK_PROMPT, perception_text
    from tiragent.tasks import DEGRADATION_OF_TASK

    rng = random.Random(0)
    template = re.sub(r"\{[%{#].*?[%}#]\}", "", chat_template(), flags=re.DOTALL)
    lines = [template, SYSTEM, SYSTEM_SHORT, TASK_PROMPT, "STOP", "error: "]
    tasks = [*MODEL_WORDS, *(t for t in TASK_NAMES if t not in MODEL_WORDS)]
    for task in tasks:
        models = MODEL_WORDS.get(task, ["unet"])
        lines.append(json.dumps({"type": "function", "function": {"name": task, "models": models, "params": rng.sample(PARAM_WORDS, 3)}}))
        lines.append(f"{task}: {' '.join(models)}")  # a short tool list's line, as the template renders it
        for model in models:
            lines.append(f'<tool_call>\n{{"name": "{task}", "arguments": {{"model": "{model}"}}}}\n</tool_call>')
            lines.append(f"{task}.{model} done; niqe {rng.uniform(2, 20):.2f}, piqe {rng.uniform(0, 100):.2f}")
    for _ in range(64):  # the detector's readings, as perception_text writes them
        found = {t: rng.choice([0.0, rng.random()]) for t in tasks}
        severity = {DEGRADATION_OF_TASK[t]: rng.uniform(1, 60) for t in found if DEGRADATION_OF_TASK.get(t) in SEVERITY_WORDS}
        lines.append(f"{TASK_PROMPT}\n{perception_text({'tasks': found, 'severity': severity})}")
    return lines * 8


def build_tiny_qwen(
    out_dir: str | Path, *, arch: str = "qwen3_vl", hidden_size: int = 64, layers: int = 2, vision_depth: int = 2, seed: int = 0
) -> Path:
    """``arch``: ``qwen3_vl`` (Qwen3-VL) or ``qwen2_5_vl`` (Qwen2.5-VL); ``hidden_size`` and ``layers`` of the language
    model (the vision tower has the same width and ``vision_depth`` blocks)."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2TokenizerFast,
        Qwen2VLImageProcessorFast,
        Qwen2VLVideoProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_PRETOKENIZE_REGEX

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = Tokenizer(models.BPE())
    # Qwen2's own pre-tokenization (its tokenizer class sets it on load), so that the merges learned here are the ones used
    words = pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated")
    raw.pre_tokenizer = pre_tokenizers.Sequence([words, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=1024, special_tokens=SPECIAL_TOKENS,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))  # fmt: skip
    tokenizer = Qwen2TokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {"vocab_size": len(tokenizer), "hidden_size": hidden_size, "intermediate_size": hidden_size * 2,
            "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default", "mrope_section": [2, 3, 3]},
            "pad_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]}  # fmt: skip
    special = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                   vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])  # fmt: skip
    if arch not in ("qwen3_vl", "qwen2_5_vl"):
        raise ValueError(f"arch must be 'qwen3_vl' or 'qwen2_5_vl', not {arch!r}")
    qwen3 = arch == "qwen3_vl"
    patch = 16 if qwen3 else 14
    video_class, processor_class, config_class, model_class = (
        (Qwen3VLVideoProcessor, Qwen3VLProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration)
        if qwen3
        else (Qwen2VLVideoProcessor, Qwen2_5_VLProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration)
    )
    vision = {"depth": vision_depth, "hidden_size": hidden_size, "intermediate_size": hidden_size * 2, "num_heads": 4, "patch_size": patch,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": hidden_size}  # fmt: skip
    if qwen3:
        text["head_dim"] = hidden_size // 4
        vision.update(num_position_embeddings=256, deepstack_visual_indexes=[0])
    else:
        vision.update(window_size=56, fullatt_block_indexes=[vision_depth - 1])
    side = patch * 2  # one merged token
    processor = processor_class(
        image_processor=Qwen2VLImageProcessorFast(patch_size=patch, merge_size=2, temporal_patch_size=2, min_pixels=side**2, max_pixels=(4 * side) ** 2),
        tokenizer=tokenizer,
        video_processor=video_class(patch_size=patch, merge_size=2, temporal_patch_size=2),
        chat_template=chat_template(),
    )
    config = config_class(text_config=text, vision_config=vision, **special)
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    kind = f"random-initialised {arch}"
    info = {"kind": kind, "hidden_size": hidden_size, "layers": layers, "vision_depth": vision_depth, "seed": seed,
            "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
    (out / "tir_agent.json").write_text(json.dumps(info))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Build a random-initialised Qwen-VL policy checkpoint (tiny by default, for tests).")
    parser.add_argument("out", type=Path)
    parser.add_argument("--arch", choices=["qwen3_vl", "qwen2_5_vl"], default="qwen3_vl")
    parser.add_argument("--hidden_size", type=int, default=64, help="width of the language model and of the vision tower")
    parser.add_argument("--layers", type=int, default=2, help="language-model layers")
    parser.add_argument("--vision_depth", type=int, default=2, help="vision-tower blocks")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = build_tiny_qwen(args.out, arch=args.arch, hidden_size=args.hidden_size, layers=args.layers, vision_depth=args.vision_depth, seed=args.seed)
    print(f"{args.arch} written to {out}: {json.loads((out / 'tir_agent.json').read_text())['parameters']:,} parameters")


if __name__ == "__main__":
    main()
