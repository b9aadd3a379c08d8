"""SFT of the Qwen-VL policy on gen-sft conversations: ``tir-agent train sft``.

trl's ``SFTTrainer`` keeps the loss, optimiser, checkpoints and resume; its vision collator
drops the tool schemas and fails on images inside tool turns, so ``ToolConversationCollator``
renders each conversation with the policy's own template (``agent/templates/qwen_vl_tools.jinja``,
the one the policy acts with), its tools and every image, and trains on the assistant's tokens
only (the template's ``{% generation %}`` span: the tool calls, STOP and their end-of-turn token).
The same command trains the tiny offline policy on a CPU and a pretrained Qwen2.5-VL or Qwen3-VL
on a GPU (``--lora`` for an adapter through peft).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tiragent.agent.conversation import join_images, read_views, write_trained_tools, write_views
from tiragent.agent.tiny import chat_template
from tiragent.errors import TirAgentError
from tiragent.train.configs import SFTRunConfig


def conversations(data: Path) -> list[dict[str, Any]]:
    path = Path(data) / "data.jsonl"
    if not path.is_file():
        raise TirAgentError(f"{path} does not exist: make the data with `tir-agent train gen-sft --out {data}`")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise TirAgentError(f"{path} holds no conversations")
    return rows


class ToolConversationCollator:
    """Conversations (messages with image placeholders, image files) -> a padded batch with labels on assistant tokens."""

    def __init__(self, processor: Any, tools: list[dict[str, Any]], data: Path) -> None:
        self.processor, self.tools, self.data = processor, tools, Path(data)

    def with_images(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        from PIL import Image

        return join_images(row["messages"], [Image.open(self.data / path).convert("RGB") for path in row["images"]])

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [json.loads(e["conversation"]) for e in examples]
        batch = self.processor.apply_chat_template(
            [self.with_images(r) for r in rows], tools=self.tools, tokenize=True, return_dict=True, return_tensors="pt",
            processor_kwargs={"padding": True}, return_assistant_tokens_mask=True,
        )  # fmt: skip
        mask = batch.pop("assistant_masks")
        labels = batch["input_ids"].clone()
        labels[mask == 0] = -100
        batch["labels"] = labels
        return dict(batch)


def train_sft(config: SFTRunConfig) -> Path:
    """Train, save the final policy in ``config.out``, and return that folder."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    rows = conversations(config.data)
    tools = json.loads((Path(config.data) / "tools.json").read_text())
    processor = AutoProcessor.from_pretrained(config.model)
    processor.chat_template = chat_template()  # the policy acts with this template, so it is trained with it
    processor.tokenizer.padding_side = "right"
    model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=torch.float32)
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    args = SFTConfig(
        output_dir=str(config.out),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        warmup_steps=config.warmup_ratio,  # below 1: a share of the steps (transformers 5)
        lr_scheduler_type="cosine",
        save_steps=config.save_steps,
        logging_steps=1,
        seed=config.seed,
        report_to=[],
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"conversation": json.dumps(r)} for r in rows]),
        data_collator=ToolConversationCollator(processor, tools, config.data),
        processing_class=processor,
        peft_config=peft_config,
    )
    resume = config.resume and any(Path(config.out).glob("checkpoint-*"))
    trainer.train(resume_from_checkpoint=True if resume else None)
    final = trainer.model.merge_and_unload() if config.lora else trainer.model  # a LoRA run ships merged: --policy OUT loads it
    final.save_pretrained(str(config.out))
    processor.save_pretrained(str(config.out))
    views = read_views(config.data)
    if views is not None:  # the policy acts with the views its data was made with
        write_views(config.out, views)
    write_trained_tools(config.out, tools)  # and is shown the tools it learned, whatever the server adds later
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    card = {"recipe": {k: str(v) for k, v in vars(config).items()}, "steps": trainer.state.global_step, "conversations": len(rows),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}  # fmt: skip
    (Path(config.out) / "tir_agent_sft.json").write_text(json.dumps(card, indent=2))
    return Path(config.out)
