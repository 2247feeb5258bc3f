"""Trained weights to start from: what `train --init-from` and `import-hf` read.

A `Pretrained` is a model config, its weights under our parameter names, and its tokenizer,
whichever format they came from (a gptscratch checkpoint, or a Hugging Face GPT-2 read by
`huggingface.py`). `init_from.load_pretrained` finds and reads one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.model.config import ModelConfig


@dataclass(frozen=True)
class Pretrained:
    """Trained weights to start from."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]  # our names, float32, lm_head.weight included
    tokenizer: Tokenizer
    source: str  # where it came from, for messages and checkpoint metadata


def fit_block_size(state: Mapping[str, torch.Tensor], block_size: int) -> dict[str, torch.Tensor]:
    """The state dict for a context of `block_size`: the first rows of the position table.

    Position embeddings are learned per position, so a shorter context simply never uses the
    later rows; dropping them is exact for sequences that fit.
    """
    fitted = dict(state)
    fitted["transformer.wpe.weight"] = state["transformer.wpe.weight"][:block_size]
    return fitted
