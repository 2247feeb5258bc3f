"""Starting a run from trained weights: `train --init-from SOURCE`.

The source is a gptscratch checkpoint (a run or checkpoint folder) or a Hugging Face GPT-2
(a local folder or a hub name, read by `hf_checkpoint`). It fixes the model's shape and
tokenizer: only dropout, the attention path and a shorter context (the position table is
cropped) may change. The loop loads its weights right after building the model, freezes what
the TrainConfig asks (`optimizer.freeze_parameters`), and trains with the defaults below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig
from gptscratch.training.checkpoint import META, load_checkpoint
from gptscratch.training.config import TrainConfig

# Fields a fine-tuning run may change without touching the weights' shapes.
FREE_FIELDS = ("dropout", "attention")


@dataclass(frozen=True)
class Pretrained:
    """Trained weights to start from."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]  # our names, lm_head.weight included
    tokenizer: Tokenizer
    source: str


def finetune_train_config() -> TrainConfig:
    """The defaults of a fine-tuning run (every field can still be overridden).

    The learning rate, 1e-4 decaying to 1e-5, is 6-30x below the from-scratch presets'
    (6e-4 to 3e-3): large steps would wash out what the model already knows. It sits in the
    range commonly used to fine-tune GPT-2 (3e-5 in nanoGPT's Shakespeare fine-tune, 5e-5 in
    transformers' Trainer). No weight decay: it would pull the pretrained weights towards zero
    rather than keep them near where they started.
    """
    return TrainConfig(batch_size=8, max_iters=500, learning_rate=1e-4, min_lr=1e-5,
                       warmup_iters=20, weight_decay=0.0, eval_interval=100, eval_iters=20)


def load_pretrained(source: str | Path) -> Pretrained:
    """Read the weights, config and tokenizer of a gptscratch checkpoint or HF GPT-2.

    A folder with a config.json is read as Hugging Face's; any other existing folder as a
    gptscratch run or checkpoint; a name that is not a path as a Hugging Face hub name.
    """
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        ckpt = load_checkpoint(path)
        model = ckpt.build_model("cpu")
        return Pretrained(ckpt.model_config, dict(model.state_dict()), ckpt.tokenizer(),
                          f"gptscratch checkpoint {ckpt.path}")
    if path.is_file() and path.name == META:
        return load_pretrained(path.parent)
    from gptscratch.training.hf_checkpoint import read_hf_model

    hf = read_hf_model(str(source))
    return Pretrained(hf.config, hf.state_dict, hf.tokenizer, hf.source)


def finetune_model_config(base: ModelConfig, overrides: Mapping[str, Any]) -> ModelConfig:
    """The source's model config with the allowed overrides applied.

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


def fit_block_size(state: Mapping[str, torch.Tensor], block_size: int) -> dict[str, torch.Tensor]:
    """The state dict for a context of `block_size`: the first rows of the position table.

    Position embeddings are learned per position, so a shorter context simply never uses the
    later rows; dropping them is exact for sequences that fit.
    """
    fitted = dict(state)
    fitted["transformer.wpe.weight"] = state["transformer.wpe.weight"][:block_size]
    return fitted
