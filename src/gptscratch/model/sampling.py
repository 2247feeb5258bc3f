"""Choosing the next token from the model's scores: temperature, top-k, top-p (nucleus), greedy.

This is the one place where logits become token ids; generation, the CLI and everything built
later call `sample_next_token`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptscratch.errors import require


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick each next token.

    temperature: divides the logits; < 1 sharpens, > 1 flattens, 0 means greedy (argmax).
    top_k: keep only the k most likely tokens (None keeps all).
    top_p: keep the smallest set of tokens whose probabilities sum to at least p (1.0 keeps all).
    """

    temperature: float = 0.8
    top_k: int | None = None
    top_p: float = 1.0

    def __post_init__(self) -> None:
        require(
            self.temperature >= 0,
            f"temperature ({self.temperature}) must be >= 0; use 0 for greedy or e.g. 0.8",
        )
        require(
            self.top_k is None or self.top_k >= 1,
            f"top_k ({self.top_k}) must be >= 1; try --top-k 50, or leave it out to keep all",
        )
        require(
            0.0 < self.top_p <= 1.0,
            f"top_p ({self.top_p}) must be in (0, 1]; try --top-p 0.9, or 1.0 to keep all",
        )


def filter_logits(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Apply temperature, top-k and top-p to (B, V) logits; cut tokens get -inf."""
    logits = logits / config.temperature
    if config.top_k is not None and config.top_k < logits.size(-1):
        kth = torch.topk(logits, config.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the most likely
        # token is always kept.
        drop_sorted = (cumulative - F.softmax(sorted_logits, dim=-1)) >= config.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next_token(
    logits: torch.Tensor,
    config: SamplingConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one next token per row.

    Args:
        logits: (B, V) scores for the next token (any float dtype).
        config: temperature / top-k / top-p settings.
        generator: source of randomness; the same seed gives the same tokens.

    Returns:
        (B, 1) int64 token ids.
    """
    logits = logits.float()
    if config.temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = F.softmax(filter_logits(logits, config), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
