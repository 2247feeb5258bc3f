"""The small building blocks of a Transformer block: GELU, LayerNorm and the MLP.

They sit between the embeddings and the output head: every block normalises its input
(LayerNorm), mixes information across positions (attention, in `attention.py`) and then
transforms each position on its own (the MLP below), adding each result back to the residual
stream. Parameter names (`c_fc`, `c_proj`, `ln_1`...) follow GPT-2's so real weights map 1:1.

After GPT-2's pieces come the "modern recipe" alternatives a `ModelConfig` may pick: RMSNorm
for LayerNorm, and ReLU^2 or SwiGLU MLPs for the GELU one; `make_norm` and `make_mlp` choose.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gptscratch.model.config import ModelConfig

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation, as in GPT-2 (Hendrycks & Gimpel 2016).

    GELU(x) = x * Phi(x), where Phi is the standard normal CDF: a smooth ReLU that lets a little
    negative signal through. GPT-2 used the tanh approximation of Phi, so we do too:
    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))).
    """
    return 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * torch.pow(x, 3.0))))


def gelu_exact(x: torch.Tensor) -> torch.Tensor:
    """GELU without the approximation: x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


class GELU(nn.Module):
    """The GELU the model runs: PyTorch's fused kernel for exactly the formula of `gelu` above
    (`approximate="tanh"`, GPT-2's) or of `gelu_exact` (`approximate="none"`).

    Why not call `gelu`: written out, the formula is six element-wise ops whose intermediates
    autograd must keep; `F.gelu` does the same maths forward and backward in one kernel each,
    about twice as fast (docs/benchmarks.md, "GELU"). The exact form's kernel is faster still,
    but GPT-2's weights need the tanh form. Tests check both kernels against the formulas.
    """

    def __init__(self, approximate: str = "tanh") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's always has one).

    For each position independently: y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias,
    with mean and variance over the C channels. Unlike BatchNorm it needs no batch statistics,
    so training and generation (batch of one) behave the same.
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
    """RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x^2) + eps) * weight.

    LayerNorm without the mean subtraction and the bias: they found the re-centring adds
    nothing but work, and the rescaling alone keeps the activations in range. Over the last
    dimension, whatever its size: C in a block, D for the per-head queries and keys of
    `qk_norm` (attention.py).
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
    y = W2 (silu(x W1) * (x W3)), hidden width `config.mlp_hidden` (~8C/3, see
    `config.swiglu_hidden`: three matrices at 2/3 the width cost what GELU's two cost).

    One projection of x opens a gate (silu(x W1) = x W1 * sigmoid(x W1)) that scales a second,
    linear one (x W3) element by element; Shazeer found these gated units beat ReLU and GELU at
    equal parameters. `c_fc` computes W1 and W3 at once (C -> 2 * hidden; its first half of
    rows is W1, the gate), as `c_attn` computes q, k and v at once: one matmul, GPT-2's names,
    and LoRA's "mlp" target adapts the gate and the up-projection together.
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
