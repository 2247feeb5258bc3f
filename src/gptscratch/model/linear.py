"""The Linear layer every projection of the GPT uses: nn.Linear with a faster one-token path.

Generating one token at a time turns every projection into a matrix-vector product, whose cost
is reading the weights from memory. bf16 weights halve those bytes, but on an AMX CPU
`F.linear` ran a one-row bf16 product no faster than fp32, while `torch.mv` ran it ~1.7x faster
(docs/benchmarks.md). Everything else (training, prompts, batches) takes the ordinary path.
Parameter names and shapes are nn.Linear's, so checkpoints and GPT-2 weights load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Linear):
    """y = x W^T + b, for x of shape (..., in_features)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if x.dtype != w.dtype and not torch.is_autocast_enabled(x.device.type):
            # A frozen weight stored in bf16 to halve its memory (LoRA fine-tuning) read by an
            # fp32 caller: compute in the weight's dtype, as autocast would, answer in x's.
            b = self.bias.to(w.dtype) if self.bias is not None else None
            return F.linear(x.to(w.dtype), w, b).to(x.dtype)
        if (x.numel() == x.size(-1) and w.dtype == torch.bfloat16 == x.dtype
                and w.device.type == "cpu"):
            y = torch.mv(w, x.reshape(-1))  # one row: a matrix-vector product
            if self.bias is not None:
                y = y + self.bias
            return y.view(*x.shape[:-1], w.size(0))
        return F.linear(x, w, self.bias)
