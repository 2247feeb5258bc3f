"""Rotary position embeddings (RoPE; Su et al. 2021, "RoFormer"): positions as rotations.

Instead of adding a position vector (`wpe`), attention turns each query and key: pair j of a
head's channels, read as a complex number, is multiplied at position p by exp(i p theta_j),
theta_j = base^(-2j / D). Since exp(i m theta) conj(exp(i n theta)) = exp(i (m - n) theta), a
score depends on q, k and the distance m - n only, so a sliding window (decoding.py) keeps
every score between the tokens it keeps. Channel j pairs with j + D/2 (GPT-NeoX's layout), not
RoFormer's (2j, 2j + 1). The whole story: docs/concepts/modern-recipe.md, "Rotary positions".
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
        small beside attention's T * T * D): a buffer would need rebuilding on a model built on
        the meta device (checkpoint loading), and casting the model to bf16 would round it.
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
