"""Int8 weights for decoding on a CPU, kept apart from the teaching model (as fast.py is): the
loader applies them to a built model where `--quantize int8` asks.

Why: generating one token reads every weight of the model once, and at batch 1 that reading,
not the arithmetic, sets the speed (GPT-2 124M: ~500 MB of fp32 weights a token, a multiply
and an add per 4 bytes read). Stored in int8 the Linear weights are a quarter of the bytes.

How (dynamic quantization, as in Jacob et al. 2018 and PyTorch's `quantize_dynamic`):
- Weights, once: each output row o keeps an fp32 scale s[o] = max_i |w[o, i]| / 127 and
  q[o, i] = round(w[o, i] / s[o]) in [-127, 127]. The largest weight of a row is exact, every
  other within s[o] / 2.
- Activations, at every call: the input x gets one scale for the whole tensor, a = (max(x, 0)
  - min(x, 0)) / 127, and a zero point z, so that x ~ a * (u - z) with u = round(x / a) + z in
  [0, 127] (7 bits, not 8: the kernel sums pairs of u8 x s8 products in 16 bits, which 8-bit
  inputs could overflow).
- The product sums u * q in int32 and scales back: y[o] = a * s[o] * sum_i (u_i - z) q[o, i]
  + b[o]. `reference_forward` writes that out with plain ops; tests hold the kernel to it.
FBGEMM's kernels (AVX2 and AVX-512) do the work. Both roundings cost accuracy: docs/
benchmarks.md ("Int8 decoding") measures the perplexity they cost and the speed they buy.

The token embedding, the position table, the norms, the attention scores and the KV cache stay
in fp32. The LM head, tied to the embedding in GPT-2, gets an int8 copy of its own: the head is
a third of GPT-2 124M's bytes a token, while the embedding is read a row a token.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

import torch
from torch import nn

QUANTIZE = ("none", "int8")  # what `--quantize` accepts
M = TypeVar("M", bound=nn.Module)
ACTIVATION_LEVELS = 127  # u in [0, 127]: 7-bit activations (see the module docstring)


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, s): int8 (out, in) and fp32 (out,) with weight[o, i] ~ s[o] * q[o, i]."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


class Int8Linear(nn.Module):
    """A Linear layer (y = x W^T + b) whose weight is stored in int8 with a scale per output
    row, and whose input is quantized at every call; the same in and out features, y in x's
    dtype. Inference only: there are no gradients through it."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        q, scale = quantize_rows(linear.weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        with warnings.catch_warnings():
            # PyTorch >= 2.10 warns that its quantized tensor type (qint8) is deprecated; it
            # is FBGEMM's input format, which the pinned torch has (docs/benchmarks.md).
            warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
            qweight = torch._make_per_channel_quantized_tensor(
                q, scale.double(), torch.zeros(len(scale), dtype=torch.long), 0)
            # FBGEMM's layout of q, s and b, made once: the int8 weight lives only here.
            self.packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def int8_weight(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(q, s, b) as stored: int8 (out, in), fp32 (out,), the bias or None."""
        qweight, bias = torch.ops.quantized.linear_unpack(self.packed)
        return qweight.int_repr(), qweight.q_per_channel_scales().float(), bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()  # (B*T, in)
        y = torch.ops.quantized.linear_dynamic(rows, self.packed, True)  # True: 7-bit u
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                "weight int8 with a scale per row, input quantized per call")


def reference_forward(layer: Int8Linear, x: torch.Tensor) -> torch.Tensor:
    """What `Int8Linear` computes, written with plain ops in float64 (the module docstring's
    formulas)."""
    q, s, b = layer.int8_weight()
    x = x.reshape(-1, layer.in_features).double()
    low, high = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    a = (high - low) / ACTIVATION_LEVELS or 1.0
    z = min(max(round(-low / a), 0), ACTIVATION_LEVELS)
    u = (torch.round(x / a) + z).clamp(0, ACTIVATION_LEVELS)
    y = (a * (u - z)) @ (q.double() * s.double()[:, None]).T
    if b is not None:
        y = y + b.double()
    return y


def quantize_linears(model: M) -> M:
    """Replace every nn.Linear of `model` (the blocks' projections and the LM head) with an
    `Int8Linear`, in place; the model then runs inference only. Returns `model`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
    return model


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())


def weight_bytes(model: nn.Module) -> int:
    """Bytes of weights one decoding step reads: every Linear weight (int8 or float), their
    biases and scales, and the norms (a head tied to the embedding counts once, as the head);
    the embedding tables are read a row a token and are left out."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            continue
        if isinstance(module, Int8Linear):
            q, scale, bias = module.int8_weight()
            total += q.numel() + 4 * scale.numel() + (4 * bias.numel() if bias is not None else 0)
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            total += t.numel() * t.element_size()
    return total
