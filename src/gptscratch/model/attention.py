"""Causal multi-head self-attention: how each position gathers information from earlier ones
(queries, keys, values and heads: docs/concepts/attention.md and multi-head-attention.md).

Two paths compute the same thing, and a test checks they agree: `explicit_attention`, the maths
written out, which hands back the weights a traced forward keeps (`gpt.Trace`), and PyTorch's
fused `F.scaled_dot_product_attention`, the default, which never materialises the (T, T)
scores. In generation a `LayerCache` (kv_cache.py) supplies earlier tokens' keys and values.
QK-norm and rotary positions (rotary.py) act on q and k before either path runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gptscratch.model.config import ModelConfig
from gptscratch.model.kv_cache import LayerCache
from gptscratch.model.layers import RMSNorm
from gptscratch.model.rotary import apply_rotary, rotary_angles


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                       mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal scaled dot-product attention, step by step.

    Args:
        q: (B, H, T, D) queries of the T newest positions.
        k, v: (B, H, S, D) keys and values of all S positions (S = T without a cache).
        dropout_p: probability of dropping an attention weight (training only).
        mask: optional (B, 1, T, S) bool, True where attention is allowed; by default the
            causal rule, aligned so that the last query is the last key.

    Returns:
        y: (B, H, T, D) the weighted sums of values.
        att: (B, H, T, S) attention weights; each row sums to 1 and is zero on the future.
    """
    B, H, T, D = q.shape
    S = k.size(-2)
    # 1. Causal mask as an additive bias: 0 where attention is allowed, -inf on the future, so
    #    those scores get softmax weight exactly 0. The T queries are the last T of S positions.
    if mask is None:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device)
    bias.masked_fill_(~mask, float("-inf"))
    if bias.dim() == 4:  # (B, 1, T, S) -> (B * H, T, S), one per row of the batched matmul
        bias = bias.expand(B, H, T, S).reshape(B * H, T, S)
    # 2. Scores: how well each query matches each key. Dividing by sqrt(D) keeps their variance
    #    near 1 whatever the head size, so the softmax does not saturate (Vaswani et al. 2017).
    #    baddbmm computes bias + (q @ k^T) / sqrt(D) in one matmul call, (B * H) at a time:
    #    (B*H, T, D) @ (B*H, D, S) -> (B*H, T, S); one call is faster than three on CPU.
    scores = torch.baddbmm(bias, q.flatten(0, 1), k.flatten(0, 1).transpose(-2, -1),
                           alpha=1.0 / math.sqrt(D)).view(B, H, T, S)
    # 3. Softmax over the keys turns scores into weights that sum to 1 along each row.
    att = F.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        att = F.dropout(att, p=dropout_p)
    # 4. Each output is the weighted sum of the values.
    y = att @ v  # (B, H, T, S) @ (B, H, S, D) -> (B, H, T, D)
    return y, att


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with GPT-2's parameter names (`c_attn`, `c_proj`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        # "explicit" or "sdpa" ("auto" is SDPA here; `fast.py` may pick the explicit path
        # where it runs faster).
        self.path = config.attention
        # One Linear computes q, k and v for all heads at once: C -> 3C.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # Output projection mixes the heads back together: C -> C.
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        # QK-norm (Dehghani et al. 2023, ViT-22B; modded-nanogpt): unit-RMS queries and keys
        # bound the scores, which stopped attention-logit blow-ups from diverging large runs.
        # A learned gain of D channels, shared by the heads, lets attention sharpen again.
        self.q_norm: RMSNorm | None = RMSNorm(config.head_size) if config.qk_norm else None
        self.k_norm: RMSNorm | None = RMSNorm(config.head_size) if config.qk_norm else None
        self.rotary = config.positions == "rope"

    def _split_heads(self, qkv: torch.Tensor, cache: LayerCache | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T = qkv.shape[:2]
        q, k, v = qkv.split(self.n_embd, dim=2)  # 3 x (B, T, C)
        # Multi-head attention is only a reshape: (B, T, C) -> (B, T, H, D) -> (B, H, T, D).
        H, D = self.n_head, self.n_embd // self.n_head
        q = q.view(B, T, H, D).transpose(1, 2)
        k = k.view(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, H, D).transpose(1, 2)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # RMSNorm over D, per head and position
        if self.rotary:
            # The new tokens' positions: 0..T-1, or from the cache, which counts each row
            # from its first real token (left-padded rows) and after the cached ones.
            positions = (cache.cache.positions(T) if cache is not None  # (B, T)
                         else torch.arange(T, device=qkv.device))  # (T,)
            cos, sin = rotary_angles(positions, D)
            # Keys enter the cache already turned, so each is rotated once, when it is new.
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return q, k, v

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None,
                trace: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C). With a cache, x holds only the new positions and the
        keys and values of earlier ones come from the cache. With a `trace` (a dict), the
        q, k, v projection ("qkv", (B, T, 3C)) and the attention weights ("weights",
        (B, H, T, S)) are kept in it, computed by the explicit path."""
        qkv = self.c_attn(x)  # (B, T, 3C)
        q, k, v = self._split_heads(qkv, cache)
        mask = None
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H, S, D): the cached positions, then the new ones
            mask = cache.attention_mask(q.size(2))
        dropout_p = self.dropout if self.training else 0.0
        if trace is not None or self.path == "explicit":
            y, weights = explicit_attention(q, k, v, dropout_p, mask)
            if trace is not None:
                trace["qkv"], trace["weights"] = qkv, weights
        elif mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        else:
            # One new query attends to every cached key; otherwise the causal triangle.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p,
                                               is_causal=q.size(2) > 1)
        B, H, T, D = y.shape
        y = y.transpose(1, 2).contiguous().view(B, T, H * D)  # (B, H, T, D) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))
