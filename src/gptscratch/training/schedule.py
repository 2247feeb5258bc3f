"""The learning-rate schedule: linear warmup, then cosine decay to a floor.

Warmup avoids large, badly-aimed Adam steps while its moment estimates are still noisy;
cosine decay lets the model settle into a minimum at the end (Loshchilov & Hutter 2017).
"""

from __future__ import annotations

import math


def lr_at(step: int, max_lr: float, min_lr: float, warmup: int, progress: float) -> float:
    """Learning rate for an optimizer step.

    Args:
        step: the optimizer step about to be taken (0-based).
        max_lr: peak learning rate, reached at the end of warmup.
        min_lr: floor of the cosine decay.
        warmup: number of warmup steps.
        progress: fraction of training done, in [0, 1] (by steps, or by time with --max-time).
    """
    if step < warmup:
        return max_lr * (step + 1) / warmup
    progress = min(max(progress, 0.0), 1.0)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)
