"""The small building blocks of a Transformer block: GELU, LayerNorm and the MLP that transforms
each position on its own (attention, which mixes positions, is in attention.py). Then the modern
recipe's alternatives, RMSNorm and the ReLU^2 and SwiGLU MLPs; `make_norm` and `make_mlp` choose.
Names (`c_fc`, `c_proj`) follow GPT-2's so real weights map 1:1. Concepts: docs/concepts/gelu.md,
layer-norm.md and modern-recipe.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gptscratch.model.config import ModelConfig

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU(x) = x * Phi(x), Phi the standard normal CDF (Hendrycks & Gimpel 2016), with GPT-2's
    tanh approximation: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * torch.pow(x, 3.0))))


def gelu_exact(x: torch.Tensor) -> torch.Tensor:
    """GELU without the approximation: x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


class GELU(nn.Module):
    """The GELU the model runs: PyTorch's fused kernel for the formula of `gelu`
    (`approximate="tanh"`, GPT-2's) or of `gelu_exact` (`approximate="none"`).

    Why not call `gelu`: written out it is six element-wise ops whose intermediates autograd
    must keep; `F.gelu` is one kernel each way, about twice as fast (docs/benchmarks.md,
    "GELU"). Tests check both kernels against the formulas.
    """

    def __init__(self, approximate: str = "tanh") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's always has one): for each position,
    y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, over the C channels. No batch
    statistics, so training and generation (batch of one) behave the same.
    """

    def __init__(self, n_embd: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_embd))
        self.bias = nn.Parameter(torch.zeros(n_embd)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.layer_norm computes exactly the formula above in one fused kernel.
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class MLP(nn.Module):
    """Position-wise feed-forward network, GPT-2's: C -> 4C -> GELU -> C."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = GELU("tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, C) -> (B, T, 4C) -> (B, T, C)
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


# --- The modern recipe's alternatives -------------------------------------------------------

NORM_EPS = 1e-5  # RMSNorm's epsilon, the same as LayerNorm's


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x^2) + eps) * weight, LayerNorm
    without the re-centring and the bias, which they found add nothing but work. Over the last
    dimension: C in a block, D for `qk_norm`'s per-head queries and keys (attention.py).
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.rms_norm computes the formula above in one kernel. Under CPU bf16 autocast (which,
        # unlike for layer_norm, does not upcast rms_norm's input) the queries and keys arrive
        # in bf16: the gain follows x's dtype, or the kernel falls back to a slow path.
        return F.rms_norm(x, (x.size(-1),), self.weight.to(x.dtype), NORM_EPS)


def make_norm(config: ModelConfig) -> nn.Module:
    """The normalisation of a block's inputs and of the final stream: C channels."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd)
    return LayerNorm(config.n_embd, bias=config.bias)


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    """ReLU(x)^2 (So et al. 2021, "Primer"): their architecture search found it reached a
    given loss with less training compute than GELU; one cheap op, zero for negative x."""
    return F.relu(x).square()


class ReLU2MLP(nn.Module):
    """Position-wise feed-forward network with ReLU^2: C -> 4C -> relu(x)^2 -> C."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_hidden, bias=config.bias)
        self.c_proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, C) -> (B, T, 4C) -> (B, T, C)
        return self.dropout(self.c_proj(relu_squared(self.c_fc(x))))


class SwiGLUMLP(nn.Module):
    """Gated feed-forward network, SwiGLU (Shazeer 2020, as in PaLM and LLaMA):
    y = W2 (silu(x W1) * (x W3)), hidden width `config.mlp_hidden` (~8C/3, `swiglu_hidden`).

    `c_fc` computes W1 (its first half of rows, the gate) and W3 at once, C -> 2 * hidden, as
    `c_attn` computes q, k and v: one matmul, GPT-2's names, and LoRA's "mlp" target adapts
    the gate and the up-projection together.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 2 * config.mlp_hidden, bias=config.bias)
        self.c_proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.c_fc(x).chunk(2, dim=-1)  # (B, T, C) -> 2 x (B, T, hidden)
        return self.dropout(self.c_proj(F.silu(gate) * up))  # (B, T, hidden) -> (B, T, C)


def make_mlp(config: ModelConfig) -> nn.Module:
    """The feed-forward network `config.activation` names."""
    if config.activation == "relu2":
        return ReLU2MLP(config)
    if config.activation == "swiglu":
        return SwiGLUMLP(config)
    return MLP(config)  # gelu_tanh (GPT-2's) or the exact gelu
