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
from gptscratch.model.gpt import GPT


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
    if "transformer.wpe.weight" in state:  # rotary positions have no table to cut
        fitted["transformer.wpe.weight"] = state["transformer.wpe.weight"][:block_size]
    return fitted


def adopt_weights(config: ModelConfig, weights: Mapping[str, torch.Tensor]) -> GPT:
    """A GPT whose parameters are `weights`' own tensors (made contiguous fp32 where needed),
    built on the meta device so nothing is initialised or allocated twice."""
    with torch.device("meta"):
        model = GPT(config)
    model.load_state_dict({k: _own_storage(v.float()) for k, v in weights.items()}, assign=True)
    if config.tie_embeddings:  # assign gives the head a Parameter of its own: share it again
        model.lm_head.weight = model.transformer.wte.weight
    return model


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """`t`, or a copy where it is a view into a larger tensor (a cropped position table),
    which safetensors would refuse to save."""
    whole = t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    return t if whole else t.clone()
