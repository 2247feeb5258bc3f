"""Muon for the Transformer blocks' weight matrices, AdamW for every other parameter: the
optimizer of `--optimizer muon` (Keller Jordan 2024; docs/concepts/modern-recipe.md).

Cost: Newton-Schulz on an (m, n) matrix, m <= n, adds ~5 m / B to its share of a step of B
tokens: under 1% at modded-nanogpt's scale (m = 768, B = 524,288), but on the shakespeare-char
preset (m = 256, B = 2,048), one CPU thread, Muon's step took 294 ms against 652 ms for the
forward and backward (AdamW's: 4 ms).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

# The quintic Newton-Schulz coefficients of Keller Jordan's Muon: X <- aX + b(XX^T)X + c(XX^T)^2X
# maps each singular value s to a*s + b*s^3 + c*s^5. a is as large as the iteration allows,
# so small singular values grow ~3.4x a step; the price is that the values do not converge to
# exactly 1 but settle in a band, [0.68, 1.21] after 5 steps for every s of at least 0.003 of
# the Frobenius norm (tests/unit/test_muon.py measures it), which trains as well as exactly 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz_dtype(device: torch.device) -> torch.dtype:
    """The precision Newton-Schulz runs in on `device`: bfloat16 on CUDA, as the original (the
    singular values need only land in a band, and bf16 matmuls run on tensor cores); float32
    elsewhere, as CPUs without bf16 matrix units (most) emulate bf16 matmuls, far slower (a
    384 x 1536 by 1536 x 384 product took 13x as long on this project's 2-core test machine).
    """
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def newton_schulz(g: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None
                  ) -> torch.Tensor:
    """The semi-orthogonal matrix nearest `g`, approximately: U V^T of g's SVD U S V^T, each
    singular value mapped into [0.68, 1.21] (NS_COEFFICIENTS) by a few matmuls; an exact SVD is
    slow on GPUs and has no bf16 kernel.

    Args:
        g: (rows, cols) a gradient-like matrix.
        dtype: the precision to iterate in; None: `newton_schulz_dtype` of g's device.

    Returns:
        (rows, cols) in `dtype`, with g's singular vectors.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype or newton_schulz_dtype(g.device))
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T  # (m, n) with m <= n: the Gram matrix X X^T below is the smaller, (m, m)
    # The Frobenius norm bounds the largest singular value, so after this every singular value
    # lies in [0, 1], where the iteration is stable. The epsilon keeps a zero gradient zero.
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T  # (m, m)
        poly = b * gram + c * gram @ gram  # (m, m)
        x = a * x + poly @ x  # (m, n): a X + b (X X^T) X + c (X X^T)^2 X
    return x.T if tall else x


def orthogonalise(update: torch.Tensor, steps: int) -> torch.Tensor:
    """`newton_schulz` of `update`; under FSDP (a DTensor of this rank's rows) of the whole
    matrix gathered from every rank, each keeping its rows of the same deterministic result
    (`src_data_rank=None`: no second exchange). Every rank orthogonalises every matrix
    (modded-nanogpt shares that work out): simpler, at a cost that does not shrink with ranks.
    """
    if isinstance(update, DTensor):
        whole = newton_schulz(update.full_tensor(), steps)
        return distribute_tensor(whole, update.device_mesh, update.placements, src_data_rank=None)
    return newton_schulz(update, steps)


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the parameter groups flagged `muon=True` (2-D matrices), AdamW for the rest.

    One optimizer for both, so the schedule, clipping, the GradScaler, checkpoints and exact
    resume work as with AdamW. Group settings: `lr`; AdamW's `betas`, `eps`; Muon's `lr_scale`
    (its rate is `lr * lr_scale`, so the schedule shapes both alike), `momentum`, `nesterov`,
    `ns_steps`; and decoupled `weight_decay` for both ("Muon is scalable for LLM training", Liu
    et al. 2025, found Muon needs it in long runs). State per parameter: AdamW's `step`,
    `exp_avg`, `exp_avg_sq` (as `torch.optim.AdamW` names them), Muon's `momentum_buffer`.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8,
                 weight_decay: float = 0.0, lr_scale: float = 1.0, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, muon=False,
                        lr_scale=lr_scale, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        rate, beta = group["lr"] * group["lr_scale"], group["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]  # (rows, cols), as p
            # Momentum as a running mean, buf = beta buf + (1 - beta) g: SGD's buf = beta buf + g
            # differs only by the factor 1 - beta, which newton_schulz's normalisation removes.
            buf.lerp_(p.grad, 1 - beta)
            # Nesterov: step along where the momentum is heading, (1 - beta) g + beta buf.
            update = p.grad.lerp(buf, beta) if group["nesterov"] else buf
            ortho = orthogonalise(update, group["ns_steps"]).to(p.dtype)
            # An orthogonalised (rows, cols) update has RMS 1/sqrt(max(rows, cols)); the factor
            # sqrt(max(1, rows / cols)) (modded-nanogpt's) lifts a tall matrix's (the MLP's c_fc,
            # 4C x C) to 1/sqrt(cols), what a square matrix of as many inputs gets.
            rows, cols = p.shape
            p.mul_(1 - rate * group["weight_decay"])
            p.add_(ortho, alpha=-rate * max(1.0, rows / cols) ** 0.5)

    def _adamw_step(self, group: dict[str, Any]) -> None:
        """AdamW (Loshchilov & Hutter 2019), the rule of `torch.optim.AdamW`."""
        lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)  # on the CPU: reading it costs no sync
                state["exp_avg"] = torch.zeros_like(p)  # m: the gradient's running mean
                state["exp_avg_sq"] = torch.zeros_like(p)  # v: the squared gradient's
            state["step"] += 1
            t = float(state["step"])
            m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
            p.mul_(1 - lr * decay)  # decoupled: decay is not mixed into the moments
            m.lerp_(g, 1 - beta1)  # m = beta1 m + (1 - beta1) g
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v = beta2 v + (1 - beta2) g^2
            # m and v start at zero, so early on they are too small by a factor 1 - beta^t:
            # divide it out (bias correction).
            denom = (v / (1 - beta2 ** t)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - beta1 ** t))
