"""Fine-tuning (`--init-from`): its training defaults, the model changes it allows (the source
fixes the shape and tokenizer), and the plan of a LoRA run; `run.py` puts the run together.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gptscratch.checkpoints.adapters import base_source, lora_meta
from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig, parse_targets
from gptscratch.model.gpt import GPT
from gptscratch.model.lora import check_rank
from gptscratch.training.config import TrainConfig

log = logging.getLogger("gptscratch.train")

# Fields a fine-tuning run may change without touching the weights' shapes.
FREE_FIELDS = ("dropout", "attention")


def finetune_train_config() -> TrainConfig:
    """The defaults of a fine-tuning run (every field can still be overridden): learning rate
    1e-4 decaying to 1e-5, 6-30x below the from-scratch presets' (6e-4 to 3e-3), as large steps
    would wash out what the model knows (GPT-2 is commonly fine-tuned at 3e-5 to 5e-5: nanoGPT,
    transformers' Trainer); no weight decay, which would pull the pretrained weights to zero."""
    return TrainConfig().replace(
        batch_size=8, max_iters=500, learning_rate=1e-4, min_lr=1e-5, warmup_iters=20,
        weight_decay=0.0, eval_interval=100, eval_iters=20)


def finetune_model_config(base: ModelConfig, overrides: Mapping[str, Any]) -> ModelConfig:
    """The source's model config with `overrides`: FREE_FIELDS, or a shorter block_size (the
    position table is cropped: `checkpoints.load.fit_block_size`).

    Raises:
        UserError: an override would change a weight's shape (or a longer context is asked).
    """
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if name == "block_size":
            if not isinstance(value, int) or not 1 <= value <= base.block_size:
                raise UserError(f"{flag} ({value}) must be between 1 and the source model's "
                                f"context of {base.block_size} tokens; try {flag} "
                                f"{min(base.block_size, 256)}")
        elif name not in FREE_FIELDS and value != getattr(base, name):
            raise UserError(f"{flag} ({value}) cannot change a model loaded with --init-from "
                            f"(its {name} is {getattr(base, name)}); drop {flag}")
    return dataclasses.replace(base, **overrides)


def lora_plan(init_from: str | Path, base_sha256: str, model_config: ModelConfig,
              train_config: TrainConfig) -> dict[str, Any]:
    """The `lora` entry of a LoRA run's checkpoints (`base_sha256`: the base weights' hash),
    with every refusal its settings can cause made now, before anything is written."""
    ft = train_config.finetune
    if train_config.system.fsdp:
        raise UserError("--lora-rank trains with one copy of the model per process (DDP); "
                        "drop --fsdp (the adapters are small enough not to need sharding)")
    if ft.freeze_layers or ft.freeze_embeddings:
        raise UserError("--lora-rank already freezes every weight of the model; drop "
                        "--freeze-layers / --freeze-embeddings")
    with torch.device("meta"):
        check_rank(GPT(model_config), ft.lora_rank, parse_targets(ft.lora_targets))
    log.info("LoRA: rank %d adapters on %s (alpha %g)", ft.lora_rank, ft.lora_targets,
             ft.lora_alpha)
    return lora_meta(ft.lora_rank, ft.lora_alpha, ft.lora_dropout, ft.lora_targets,
                     base_source(init_from), base_sha256)
