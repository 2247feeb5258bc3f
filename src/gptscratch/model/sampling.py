"""Choosing the next token from the model's scores: penalties, temperature, top-k, top-p, min-p.

The one place where logits become token ids (the decoding engine, beam search and the pictures
call it; settings: `config.SamplingConfig`). Hugging Face `generate`'s order: penalties on the
raw logits, temperature, the filters, then a draw, or the argmax at temperature 0
(docs/concepts/sampling.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gptscratch.model.config import SamplingConfig


class TokenCounts:
    """What the penalties need to know about each row's text so far.

    seen: (B, V) bool, tokens anywhere in the row (prompt and generated): repetition penalty.
    counts: (B, V) float, how often each token was generated: frequency and presence penalties.
    """

    def __init__(self, prompts: list[list[int]], vocab_size: int, device: torch.device) -> None:
        B = len(prompts)
        self.seen = torch.zeros(B, vocab_size, dtype=torch.bool, device=device)
        for row, ids in enumerate(prompts):
            self.seen[row, torch.tensor(ids, dtype=torch.long, device=device)] = True
        self.counts = torch.zeros(B, vocab_size, device=device)

    def add(self, ids: torch.Tensor) -> None:
        """Record one new (B, 1) token per row."""
        self.seen.scatter_(1, ids, True)
        self.counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=self.counts.dtype))

    def reorder(self, rows: torch.Tensor) -> None:
        self.seen = self.seen.index_select(0, rows)
        self.counts = self.counts.index_select(0, rows)


def apply_penalties(logits: torch.Tensor, config: SamplingConfig,
                    history: TokenCounts) -> torch.Tensor:
    """Apply the repetition, frequency and presence penalties to (B, V) fp32 logits."""
    if config.repetition_penalty != 1.0:
        p = config.repetition_penalty
        # Dividing a positive score and multiplying a negative one both make the token less
        # likely when p > 1 (a plain division would make negative scores *more* likely).
        penalised = torch.where(logits > 0, logits / p, logits * p)
        logits = torch.where(history.seen, penalised, logits)
    if config.frequency_penalty != 0.0 or config.presence_penalty != 0.0:
        logits = (logits - config.frequency_penalty * history.counts
                  - config.presence_penalty * (history.counts > 0).float())
    return logits


def filter_logits(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Apply temperature, top-k, top-p and min-p to (B, V) logits; cut tokens get -inf."""
    logits = logits / config.temperature
    if config.top_k is not None and config.top_k < logits.size(-1):
        kth = torch.topk(logits, config.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = F.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the most likely
        # token is always kept.
        drop_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= config.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if config.min_p > 0.0:
        # min-p (Nguyen et al. 2024) scales the cut with the model's confidence: a sure model
        # keeps few tokens, an unsure one many. p_i >= min_p * p_max <=> l_i >= l_max + log(min_p).
        threshold = logits.max(dim=-1, keepdim=True).values + torch.log(
            torch.tensor(config.min_p, device=logits.device))
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    return logits


def sample_next_token(logits: torch.Tensor, config: SamplingConfig,
                      generator: torch.Generator | Sequence[torch.Generator] | None = None,
                      history: TokenCounts | None = None) -> torch.Tensor:
    """Pick one next token per row.

    Args:
        logits: (B, V) scores for the next token (any float dtype).
        generator: source of randomness (the same seed gives the same tokens), or one per
            row (each row then draws what it would draw alone).
        history: the rows' tokens so far, needed when a penalty is set.

    Returns:
        (B, 1) int64 token ids.
    """
    logits = logits.float()
    if config.uses_penalties:
        if history is None:
            raise ValueError("penalties need the rows' token history")
        logits = apply_penalties(logits, config, history)
    if config.temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = F.softmax(filter_logits(logits, config), dim=-1)  # (B, V)
    if isinstance(generator, Sequence):
        return torch.cat([torch.multinomial(p[None], 1, generator=g)
                          for p, g in zip(probs, generator, strict=True)])
    return torch.multinomial(probs, num_samples=1, generator=generator)
