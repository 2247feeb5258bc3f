"""The GPT: token ids in, next-token logits out.

  idx (B, T) -> token embedding (B, T, C) + position embedding (T, C)
  -> N x Block: x = x + attention(LayerNorm(x)); x = x + MLP(LayerNorm(x))   (pre-norm residual)
  -> final LayerNorm -> LM head (C -> V, tied to the token embedding) -> logits (B, T, V)

The loss (`lm_loss`) is separate, so training and generation share one forward. A `KVCache`
(kv_cache.py) lets each generation step feed only the new tokens; a `Trace` keeps what the
forward computed for explain, the logit lens and the pictures, so no other file re-implements
a block. The modern recipe's options (docs/concepts/modern-recipe.md) change single steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from gptscratch.model.attention import CausalSelfAttention
from gptscratch.model.config import ModelConfig
from gptscratch.model.kv_cache import KVCache, LayerCache
from gptscratch.model.layers import make_mlp, make_norm


@dataclass
class Trace:
    """What one forward pass computed, kept for a closer look (batch of B, T positions)."""

    tokens: torch.Tensor | None = None  # (B, T, C) the token embeddings
    positions: torch.Tensor | None = None  # (T, C) learned position embeddings (None: rotary)
    embedded: torch.Tensor | None = None  # (B, T, C) their sum, block 0's input
    # One dict per block, in order: "ln_1" (B, T, C), "qkv" (B, T, 3C), "weights" (B, H, T, T)
    # the attention weights, "attention" (B, T, C) its output, "mid" (B, T, C) the stream after
    # its residual add, "ln_2", "mlp" and "out" (B, T, C) the stream after the block.
    blocks: list[dict[str, torch.Tensor]] = field(default_factory=list)
    final: torch.Tensor | None = None  # (B, T, C) the final norm's output, what the head reads

    def streams(self) -> list[torch.Tensor]:
        """The residual stream entering block 0 and leaving every block: n_layer + 1 of
        (B, T, C)."""
        assert self.embedded is not None, "run a forward pass with this trace first"
        return [self.embedded] + [b["out"] for b in self.blocks]


class Block(nn.Module):
    """One Transformer block, pre-LayerNorm as in GPT-2: normalise, transform, add back."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)  # LayerNorm, or RMSNorm
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = make_mlp(config)  # GELU (GPT-2's), ReLU^2 or SwiGLU

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None,
                trace: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C); a `trace` dict receives every stage (see `Trace`)."""
        # The residual stream x carries information straight through; each sub-layer only adds a
        # correction, which keeps gradients healthy in deep stacks (He et al. 2016).
        h = self.ln_1(x)
        a = self.attn(h, cache, trace)
        x = x + a
        h2 = self.ln_2(x)
        m = self.mlp(h2)
        if trace is not None:
            trace.update({"ln_1": h, "attention": a, "mid": x, "ln_2": h2, "mlp": m,
                          "out": x + m})
        return x + m


class Transformer(nn.Module):
    """The body of the GPT; its attribute names give GPT-2's parameter names
    (`transformer.wte.weight`, `transformer.h.0.attn.c_attn.weight`, ...)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        # Learned positions, one row per position; rotary positions need no table.
        self.wpe: nn.Embedding | None = (nn.Embedding(config.block_size, config.n_embd)
                                         if config.positions == "learned" else None)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = make_norm(config)

    def blocks(self) -> list[Block]:
        return [b for b in self.h if isinstance(b, Block)]


class GPT(nn.Module):
    """A decoder-only Transformer language model with GPT-2's architecture and names."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # Training may ask to keep only each block's input and recompute the rest in the
        # backward pass (`features`): activation memory of ~1 block instead of L, for one more
        # forward pass of compute. Never used at generation (no backward there).
        self.activation_checkpointing = False
        self.transformer = Transformer(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017): the output head reuses the token embedding matrix,
        # so a token's input and output representations are the same vector.
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2 scales the init of each residual branch's last projection by 1/sqrt(2 * L): the
        # stream sums 2 * L branches, and this keeps its variance from growing with L.
        # zero_init_proj (modded-nanogpt) starts every branch at zero, each block as the
        # identity; c_proj's input is not zero, so its first gradient is not either.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if config.zero_init_proj:
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count, by default without the position embedding (as GPT-2 reports it);
        a tied token embedding is counted once."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.transformer.wpe is not None:
            n -= self.transformer.wpe.weight.numel()
        return n

    def _embed(self, idx: torch.Tensor, kv_cache: KVCache | None = None,
               trace: Trace | None = None) -> torch.Tensor:
        B, T = idx.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence length {start + T} exceeds block_size "
                             f"{self.config.block_size}")
        tok = x = self.transformer.wte(idx)  # (B, T, C)
        pos = None
        if self.transformer.wpe is not None:  # rotary positions act in attention instead
            if kv_cache is None:
                ids = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
            else:
                ids = kv_cache.positions(T)  # (B, T): each row counts from its first real token
            pos = self.transformer.wpe(ids)
            x = x + pos  # (T, C) broadcast over B, or (B, T, C)
        x = self.transformer.drop(x)
        if trace is not None:
            trace.tokens, trace.positions, trace.embedded = tok, pos, x
        return x

    def features(self, idx: torch.Tensor, kv_cache: KVCache | None = None,
                 trace: Trace | None = None) -> torch.Tensor:
        """The final hidden states, (B, T, C): what the LM head reads. Generation applies the
        head to the last position only, which saves a (T, C) x (C, V) matmul per step."""
        x = self._embed(idx, kv_cache, trace)
        for i, block in enumerate(self.transformer.blocks()):
            if self.activation_checkpointing and self.training and kv_cache is None:
                # Dropout masks are the same in the recomputation: checkpoint saves and
                # restores the random state (preserve_rng_state, its default).
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                stages: dict[str, torch.Tensor] | None = None
                if trace is not None:
                    stages = {}
                    trace.blocks.append(stages)
                x = block(x, kv_cache.layer(i) if kv_cache is not None else None, stages)
        if kv_cache is not None:
            kv_cache.advance(idx.size(1))
        x = self.transformer.ln_f(x)
        if trace is not None:
            trace.final = x
        return x

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The read-out, (..., C) final hidden states -> (..., V) logits: the LM head, then the
        soft cap when the config has one. Generation calls it on the last position only."""
        logits = self.lm_head(features)
        if self.config.logit_softcap > 0:
            logits = softcap(logits, self.config.logit_softcap)
        return logits

    def forward(self, idx: torch.Tensor, kv_cache: KVCache | None = None,
                trace: Trace | None = None) -> torch.Tensor:
        """idx: (B, T) int64 token ids -> logits (B, T, V).

        Without a cache, T <= block_size. With one, idx holds the T tokens that follow the
        `kv_cache.length` cached ones (length + T <= block_size), and the cache grows by T.
        With a `trace`, what the pass computed is kept in it (`Trace`; attention then takes
        the explicit path, which hands back its weights).
        """
        return self.logits(self.features(idx, kv_cache, trace))

    def new_kv_cache(self, batch: int, pad: torch.Tensor | None = None,
                     dtype: torch.dtype | None = None) -> KVCache:
        """An empty cache for `batch` rows (left-padded by `pad`, (B,) int64, if given), stored
        in `dtype` (default: the model's parameter dtype)."""
        c = self.config
        weight = self.transformer.wte.weight
        return KVCache(c.n_layer, batch, c.n_head, c.head_size, c.block_size,
                       weight.device, dtype or weight.dtype, pad)


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(logits / cap) (Gemma 2; modded-nanogpt): about the identity for small logits,
    never beyond +-cap, so the model cannot push a few logits ever higher (overconfidence)."""
    return cap * torch.tanh(logits / cap)


def count_params(config: ModelConfig, non_embedding: bool = True) -> int:
    """`GPT.num_params` of a model with this config, built on the meta device (no memory, no
    initialisation)."""
    with torch.device("meta"):
        return GPT(config).num_params(non_embedding)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor,
            reduction: str = "mean") -> torch.Tensor:
    """Mean (or with `reduction="sum"`, total) cross-entropy of next-token prediction.

    Args:
        logits: (B, T, V) scores from `GPT.forward`.
        targets: (B, T) int64 ids of the true next tokens; -1 where no loss is taken (chat
            fine-tuning's prompts and padding), which the mean and the sum leave out.

    Returns:
        A scalar fp32 tensor; exp(mean loss) is the perplexity.
    """
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=-1, reduction=reduction)
