"""Tiny random Hugging Face GPT-2 models, built offline in the tests, and greedy decoding.

Every parameter is redrawn (LayerNorm gains around 1, everything else around 0) so that biases
and norms carry signal and a wrong mapping shows up in the logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

GPT2_VOCAB = 50257


def make_hf_model(folder: Path | None = None, seed: int = 0, **config: Any) -> Any:
    """A GPT2LMHeadModel with random weights (dropout off), saved to `folder` if given."""
    vocab = config.setdefault("vocab_size", 97)
    special = GPT2_VOCAB - 1 if vocab == GPT2_VOCAB else None
    defaults = dict(n_embd=16, n_head=2, n_layer=2, n_positions=32, resid_pdrop=0.0,
                    embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=special, eos_token_id=special)
    cfg = transformers.GPT2Config(**{**defaults, **config})
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_gain = ".ln_" in name and name.endswith(".weight")
            p.normal_(1.0 if is_gain else 0.0, 0.2)
    # No early stop at an end-of-text id: greedy runs are compared token by token.
    model.generation_config.eos_token_id = None
    if folder is not None:
        model.save_pretrained(folder)
    return model


def greedy(model: torch.nn.Module, ids: torch.Tensor, steps: int, block_size: int) -> list[int]:
    """Greedy continuation with a plain argmax loop over our GPT's forward: (1, T) -> ids."""
    with torch.no_grad():
        for _ in range(steps):
            logits = model(ids[:, -block_size:])
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    out: list[int] = ids[0].tolist()
    return out


def hf_greedy(model: Any, ids: torch.Tensor, steps: int) -> list[int]:
    """transformers' own greedy generation (its KV cache, its code path)."""
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                             do_sample=False, pad_token_id=0)
    result: list[int] = out[0].tolist()
    return result
