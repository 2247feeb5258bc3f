"""Choosing the next token from the model's scores: penalties, temperature, top-k, top-p, min-p.

This is the one place where logits become token ids; generation, beam search, the CLI, the
Python API and everything built later call `sample_next_token`. The order follows Hugging Face
`generate`: penalties change the raw logits first, then temperature, then the filters that cut
unlikely tokens (top-k, top-p, min-p), then a draw (or the argmax when temperature is 0).
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
    min_p: keep tokens at least min_p times as likely as the most likely one (0 keeps all).
    repetition_penalty: divides positive (multiplies negative) logits of every token already
        in the text, prompt included (CTRL, Keskar et al. 2019); 1.0 is none, > 1 discourages.
    frequency_penalty: subtracts this times the number of times a token was generated so far.
    presence_penalty: subtracts this once from every token generated so far.
        (The two follow OpenAI's definitions: range [-2, 2], 0 is none.)
    """

    temperature: float = 0.8
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

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
        require(
            0.0 <= self.min_p <= 1.0,
            f"min_p ({self.min_p}) must be in [0, 1]; try --min-p 0.05, or 0 to keep all",
        )
        require(
            0.0 < self.repetition_penalty <= 10.0,
            f"repetition_penalty ({self.repetition_penalty}) must be in (0, 10]; 1.0 is none, "
            "try --repetition-penalty 1.2",
        )
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            require(
                -2.0 <= value <= 2.0,
                f"{name} ({value}) must be in [-2, 2]; 0 is none, "
                f"try --{name.replace('_', '-')} 0.5",
            )

    @property
    def uses_penalties(self) -> bool:
        return (self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0
                or self.presence_penalty != 0.0)


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


def sample_next_token(
    logits: torch.Tensor,
    config: SamplingConfig,
    generator: torch.Generator | None = None,
    history: TokenCounts | None = None,
) -> torch.Tensor:
    """Pick one next token per row.

    Args:
        logits: (B, V) scores for the next token (any float dtype).
        config: the sampling settings.
        generator: source of randomness; the same seed gives the same tokens.
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
    probs = F.softmax(filter_logits(logits, config), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
