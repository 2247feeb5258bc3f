"""Speed and memory paths for particular devices, kept apart from the teaching model, which is
the reference: the loader and the trainer apply them to a built model. Each computes what the
reference does, up to rounding (tests check); measured in docs/benchmarks.md: `FastLinear` (a
one-row bf16 product on a CPU as `torch.mv`, ~1.7x `F.linear` on AMX: "Generation"; a frozen
bf16 weight answering an fp32 caller) and `choose_attention_path` (the explicit path's plain
matmuls beat SDPA's fused CPU backward under bf16 autocast: "Attention path").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gptscratch.model.attention import CausalSelfAttention
from gptscratch.model.lora import LoRALinear


class FastLinear(nn.Linear):
    """nn.Linear with the two paths above; the same parameters, names and shapes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if x.dtype != w.dtype and not torch.is_autocast_enabled(x.device.type):
            # A frozen weight kept in bf16 read by an fp32 caller (a LoRA run's text samples):
            # compute in the weight's dtype, as autocast would, answer in x's.
            b = self.bias.to(w.dtype) if self.bias is not None else None
            return F.linear(x.to(w.dtype), w, b).to(x.dtype)
        if (x.numel() == x.size(-1) and w.dtype == torch.bfloat16 == x.dtype
                and w.device.type == "cpu"):
            y = torch.mv(w, x.reshape(-1))  # one row: a matrix-vector product
            if self.bias is not None:
                y = y + self.bias
            return y.view(*x.shape[:-1], w.size(0))
        return F.linear(x, w, self.bias)


class FastLoRALinear(LoRALinear, FastLinear):
    """A LoRA adapter whose frozen layer takes `FastLinear`'s paths (its `super().forward`)."""


def use_fast_linears(model: nn.Module) -> nn.Module:
    """Give every Linear layer of `model` `FastLinear`'s paths, in place (a class change: the
    parameters stay where they are)."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FastLinear
        elif type(module) is LoRALinear:
            module.__class__ = FastLoRALinear
    return model


def store_frozen_in_bf16(model: nn.Module) -> None:
    """Keep the frozen Linear weights of a LoRA run in bf16: half their memory, and what
    bf16 autocast would cast them to at every step anyway. A weight shared with the token
    embedding (a tied head) stays fp32."""
    use_fast_linears(model)
    shared = model.get_submodule("transformer.wte").weight
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and not m.weight.requires_grad and m.weight is not shared:
                m.weight.data = m.weight.data.to(torch.bfloat16)


def choose_attention_path(model: nn.Module, device: torch.device,
                          autocast: torch.dtype | None) -> None:
    """Resolve `attention="auto"` for where the model runs: the explicit path under bf16
    autocast on a CPU, SDPA elsewhere. Layers set to "sdpa" or "explicit" keep their path."""
    explicit = device.type == "cpu" and autocast == torch.bfloat16
    for module in model.modules():
        if isinstance(module, CausalSelfAttention) and module.path == "auto":
            module.path = "explicit" if explicit else "auto"
