"""Rotary position embeddings (RoPE; Su et al. 2021, "RoFormer"): positions as rotations.

GPT-2 adds a learned vector per position to each token's embedding (`wpe`). Rotary adds
nothing: inside attention it rotates each query and key by an angle proportional to its
position. Split a head's D channels into D/2 pairs and treat each pair as a complex number z;
at position p, pair j becomes z * exp(i * p * theta_j), with theta_j = base^(-2j / D). The
score of query m against key n is then

    Re(q_m * conj(k_n)) summed over pairs, with q_m rotated by m and k_n by n,
    = a function of q, k and (m - n) only,

because exp(i m theta) * conj(exp(i n theta)) = exp(i (m - n) theta). So attention sees
*relative* positions, no table limits the context, and a window that slides during
generation (decoding.py) can be re-read from position 0 without changing any score between
the tokens it keeps. Low pairs turn fast (theta_0 = 1 radian per position) and high pairs
slowly, so heads can track both nearby and distant tokens.

Pairing: this module pairs channel j with channel j + D/2 (the "half-split" layout of GPT-NeoX
and Hugging Face's LLaMA), not RoFormer's neighbours (2j, 2j + 1). The two differ only by a
fixed permutation of the channels, applied to q and k alike, which the learned c_attn absorbs;
the halves are contiguous, so no strided gather is needed.
"""

from __future__ import annotations

import torch

# RoFormer's base: the slowest pair turns once every ~2 pi * 10,000 positions, far beyond
# any block_size trained here.
ROPE_BASE = 10000.0


def rotary_angles(positions: torch.Tensor, head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's angle for every channel pair.

    Args:
        positions: (T,) or (B, T) int64 positions (the KV cache gives each row its own).
        head_size: D, even.

    Returns:
        cos, sin: (T, D/2) or (B, T, D/2) fp32. Computed on the fly (T * D/2 sines a layer,
        small beside attention's T * T * D) rather than kept in a buffer: a model built on
        the meta device (checkpoint loading) would have to rebuild one, and casting the model
        to bf16 would round it.
    """
    pairs = torch.arange(0, head_size, 2, dtype=torch.float32, device=positions.device)
    theta = ROPE_BASE ** (-pairs / head_size)  # (D/2,) theta_j = base^(-2j / D)
    angles = positions.float().unsqueeze(-1) * theta  # (..., T, D/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair (j, j + D/2) of x by its position's angle.

    Args:
        x: (B, H, T, D) queries or keys.
        cos, sin: (T, D/2) or (B, T, D/2) from `rotary_angles`.

    Returns:
        (B, H, T, D), x's dtype; the rotation itself is done in fp32.
    """
    if cos.dim() == 3:  # (B, T, D/2) -> (B, 1, T, D/2): one set of positions per row
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, H, T, D/2) each: real and imaginary parts
    # (x1 + i x2) * (cos + i sin) = (x1 cos - x2 sin) + i (x1 sin + x2 cos)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)
