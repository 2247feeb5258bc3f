"""Autoregressive generation: feed the model its own predictions, one token at a time.

`generate_tokens` works on ids and yields each new token as it is chosen; `stream_text` wraps
it for text: it encodes the prompt, decodes as it goes (holding back incomplete UTF-8 and the
start of a possible stop string) and ends cleanly at a stop string. The CLI and the Python API
share these two functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import torch

from gptscratch.errors import UserError
from gptscratch.model.gpt import GPT
from gptscratch.model.sampling import SamplingConfig, sample_next_token


class TextCodec(Protocol):
    """What generation needs from a tokenizer (see `gptscratch.data.tokenizers`)."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@torch.no_grad()
def generate_tokens(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield (B, 1) new token ids, one step at a time.

    Args:
        model: the GPT, in eval mode.
        idx: (B, T) int64 prompt ids on the model's device; T may exceed block_size.
        max_new_tokens: how many tokens to generate.
        sampling: temperature / top-k / top-p.
        generator: randomness source for reproducible sampling.
    """
    block_size = model.config.block_size
    for _ in range(max_new_tokens):
        # The model has learned positions only up to block_size: when the context is longer,
        # keep its most recent block_size tokens (the oldest are cropped).
        context = idx if idx.size(1) <= block_size else idx[:, -block_size:]
        logits = model(context)[:, -1, :]  # (B, V): scores for the next token only
        next_id = sample_next_token(logits, sampling, generator)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
        yield next_id


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might be the start of a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                longest = max(longest, n)
                break
    return longest


def stream_text(
    model: GPT,
    tokenizer: TextCodec,
    prompt: str,
    max_new_tokens: int,
    sampling: SamplingConfig,
    *,
    stop: Sequence[str] = (),
    generator: torch.Generator | None = None,
) -> Iterator[str]:
    """Yield pieces of generated text (the prompt itself is not repeated).

    Generation ends after `max_new_tokens` tokens or at the first stop string, which is not
    emitted. Joining the pieces gives the whole continuation.
    """
    if any(s == "" for s in stop):
        raise UserError("a stop string is empty; give a non-empty --stop text")
    if max_new_tokens < 0:
        raise UserError(f"max_new_tokens ({max_new_tokens}) must be >= 0")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise UserError("the prompt is empty and the tokenizer has no start token; give --prompt")
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    new_ids: list[int] = []
    emitted = 0  # characters of the decoded continuation already yielded
    for next_id in generate_tokens(model, idx, max_new_tokens, sampling, generator):
        new_ids.append(int(next_id.item()))
        text = tokenizer.decode(new_ids)
        cut = min((p for p in (text.find(s, max(0, emitted - len(s))) for s in stop) if p >= 0),
                  default=-1)
        if cut >= 0:
            if cut > emitted:
                yield text[emitted:cut]
            return
        # A byte-level BPE token can end in the middle of a UTF-8 character: wait for the rest.
        safe = len(text.rstrip("\ufffd"))
        safe -= _held_back(text[:safe], stop)
        if safe > emitted:
            yield text[emitted:safe]
            emitted = safe
    text = tokenizer.decode(new_ids)
    if len(text) > emitted:
        yield text[emitted:]
