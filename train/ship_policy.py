"""Copy a trained policy into the package (``agent/weights/policy/``) with its card: the last step of ``make policy``.

    python -m tiragent.train.ship_policy --run runs/policy/rl --out agent/weights/policy [--decode rank --gate 0.5 --prior 1]
    python -m tiragent.train.ship_policy --out agent/weights/policy --decode rank --gate 0.5 --prior 1   # decoding only

The decoding (``DecodingConfig``: greedy generation, or ranked candidates gated and weighted by the detector) is saved
beside the weights, so ``--policy tir`` and ``--policy agent/weights/policy`` run as shipped.

The card (``card.json`` and ``card.md``) gathers what the run folders recorded: the vision tower's pretraining
(``tir_agent_vision.json``, where SFT started from a ``train vision`` folder), the SFT data's card (``gen-sft``), the SFT run (``tir_agent_sft.json``), the RL run (``tir_agent_rl.json``) and the
model's size, so the shipped weights say how they were made.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tiragent.agent.conversation import TOOLS_FILE, VIEWS_FILE
from tiragent.agent.policies.qwen import DecodingConfig, write_decoding

FILES = ("config.json", "generation_config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
         "chat_template.jinja", VIEWS_FILE, TOOLS_FILE)  # fmt: skip


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def ship(
    run: Path,
    out: Path,
    sft: Path | None = None,
    data: Path | None = None,
    init: Path | None = None,
    budget_mb: float = 50.0,
    decoding: DecodingConfig | None = None,
) -> dict[str, Any]:
    """Copy ``run`` (a policy folder) to ``out`` and write its card; ``sft``, ``data``, ``init``: the earlier stages' folders
    (default: read from the run's own recipe)."""
    rl = _read(run / "tir_agent_rl.json")
    sft = sft or (Path(rl["recipe"]["init"]) if rl else run)
    sft_card = _read(sft / "tir_agent_sft.json")
    if sft_card is None:
        raise SystemExit(f"{sft}: no tir_agent_sft.json (give --sft, the folder `tir-agent train sft` wrote)")
    data = data or Path(sft_card["recipe"]["data"])
    init = init or Path(sft_card["recipe"]["model"])
    size_mb = (run / "model.safetensors").stat().st_size / 2**20
    if size_mb > budget_mb:
        raise SystemExit(f"{run}/model.safetensors is {size_mb:.1f} MB, over the {budget_mb:.0f} MB budget")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in FILES:
        if (run / name).is_file():
            shutil.copy(run / name, out / name)
    card = {
        "model": _read(init / "tir_agent.json"),
        "size_mb": round(size_mb, 2),
        "vision": _read(init / "tir_agent_vision.json"),
        "sft_data": _read(data / "card.json"),
        "sft": sft_card,
        "rl": rl,
    }
    return set_decoding(out, decoding or DecodingConfig(), card)


def set_decoding(out: Path, decoding: DecodingConfig, card: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save ``decoding`` beside the policy in ``out`` and write its card (``card``, or the one already there) saying so."""
    card = card or _read(out / "card.json")
    if card is None:
        raise SystemExit(f"{out}: no card.json (ship a run there first: --run)")
    write_decoding(out, decoding)
    card = {**card, "decoding": asdict(decoding)}
    (out / "card.json").write_text(json.dumps(card, indent=2))
    (out / "card.md").write_text(card_markdown(card))
    return card


def card_markdown(card: dict[str, Any]) -> str:
    model, data, sft, rl = card["model"] or {}, card["sft_data"] or {}, card["sft"], card["rl"]
    lines = ["# The shipped policy", "", f"A {model.get('kind', 'Qwen-VL')} with {model.get('parameters', 0):,} parameters ({card['size_mb']} MB), "
             f"trained from scratch by `make policy` (train/policy_recipe.sh).", ""]  # fmt: skip
    if card.get("vision"):
        vision = card["vision"]
        lines.append(f"- Vision tower pretrained on degradation recognition (`tir-agent train vision`): {vision['recipe']['steps']} steps of "
                     f"{vision['recipe']['batch']} on {vision['recipe']['samples']} renders of {vision['train_photos']} photos; exact-set accuracy on "
                     f"held-out photos {vision['validation']['exact_set']:.3f} (label prior {vision['validation']['label_prior_exact_set']:.3f}).")  # fmt: skip
    if data:
        lines.append(f"- SFT data: {data['conversations']} conversations from {data['images']} images ({data['kinds']}), "
                     f"searched gain {data['searched_gain_psnr_db']:.2f} dB; made with {json.dumps({k: data['config'][k] for k in ('images', 'crop', 'degradations', 'camera_ratio', 'search_metrics', 'perception', 'detector', 'perception_context', 'fixed_views', 'reuse_search') if k in data['config']})}.")  # fmt: skip
    lines.append(f"- SFT: {sft['steps']} steps on {sft['conversations']} conversations, loss {sft['first_loss']:.3f} -> {sft['last_loss']:.3f}; "
                 f"recipe {json.dumps({k: sft['recipe'][k] for k in ('epochs', 'batch_size', 'lr', 'warmup_ratio')})}.")  # fmt: skip
    if rl:
        lines.append(f"- RL: {rl['steps']} GRPO steps, {rl['episodes']} episodes in {rl['minutes']} min on {rl['machine']}; "
                     f"recipe {json.dumps({k: rl['recipe'][k] for k in ('group', 'batch', 'lr', 'temperature', 'kl', 'crop', 'degradations', 'camera_ratio', 'perception_context', 'max_turns') if k in rl['recipe']})}; "
                     f"final held-out evaluation {json.dumps(rl.get('final_eval') or {})}.")  # fmt: skip
    decoding = card.get("decoding") or asdict(DecodingConfig())
    if decoding["decode"] == "rank":
        lines.append(f"- Decoding: every valid reply ranked by its likelihood; candidates the tasks the detector reads at least "
                     f"{decoding['gate']} likely, besides STOP; the detector's log-odds added with weight {decoding['prior']}"
                     + ("; each task scored by its replies' summed probabilities and run with the server's default model." if decoding.get("models") == "default" else "."))  # fmt: skip
    else:
        lines.append("- Decoding: greedy generation.")
    return "\n".join(lines) + "\n"


def main() -> None:
    from transformers import HfArgumentParser

    parser = HfArgumentParser([DecodingConfig], description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--run", type=Path, help="the final policy folder (train rl's or train sft's --out); without it, only the decoding of the policy in --out is set"
    )
    parser.add_argument("--out", type=Path, default=Path("agent/weights/policy"))
    parser.add_argument("--sft", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--init", type=Path)
    decoding, args = parser.parse_args_into_dataclasses()
    if args.run is None:
        set_decoding(args.out, decoding)
        print(f"decoding of {args.out} set: {asdict(decoding)}")
        return
    card = ship(args.run, args.out, args.sft, args.data, args.init, decoding=decoding)
    print(f"policy shipped to {args.out} ({card['size_mb']} MB); card: {args.out / 'card.md'}")


if __name__ == "__main__":
    main()
