"""The optimizer, its parameter groups, and the learning-rate schedule it follows: AdamW, or
with `--optimizer muon` Muon for the blocks' matrices (`muon.py`); frozen parameters are left
out. For learners: docs/concepts/training-loop.md.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

from gptscratch.errors import UserError
from gptscratch.model.gpt import GPT
from gptscratch.model.lora import is_lora_parameter
from gptscratch.training.config import FinetuneConfig, OptimConfig
from gptscratch.training.muon import MuonWithAdamW


def check_freeze_layers(freeze_layers: int, n_layer: int) -> None:
    """Raise a UserError unless the model has at least `freeze_layers` blocks."""
    if freeze_layers > n_layer:
        raise UserError(f"freeze_layers ({freeze_layers}) exceeds the model's {n_layer} "
                        f"layers; try --freeze-layers {n_layer - 1}")


def freeze_parameters(model: GPT, config: FinetuneConfig) -> None:
    """Stop gradients to the embeddings and / or the first `freeze_layers` blocks: fixing the
    most general features keeps fine-tuning on little text from overwriting what the model
    knows, and saves their gradients and optimizer state."""
    check_freeze_layers(config.freeze_layers, model.config.n_layer)
    if config.freeze_embeddings:
        model.transformer.wte.requires_grad_(False)
        if model.transformer.wpe is not None:  # rotary positions have no table
            model.transformer.wpe.requires_grad_(False)
    for block in model.transformer.blocks()[: config.freeze_layers]:
        block.requires_grad_(False)
    # The final LayerNorm is never frozen, so something always trains.


def is_muon_weight(name: str, p: nn.Parameter) -> bool:
    """Whether `--optimizer muon` gives this parameter to Muon: a 2-D weight inside a block
    (attention and MLP Linears), not a LoRA adapter's low-rank factor (not a layer's map)."""
    return name.startswith("transformer.h.") and p.dim() == 2 and not is_lora_parameter(name)


def _named_groups(model: nn.Module, muon: bool) -> list[list[tuple[str, nn.Parameter]]]:
    """The trainable parameters, by name, split into the groups of `parameter_groups`, in its
    order: decayed, not decayed, and with `muon` the Muon group last."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # tied: once
    hidden = [(n, p) for n, p in named if muon and is_muon_weight(n, p)]
    rest = [(n, p) for n, p in named if not (muon and is_muon_weight(n, p))]
    groups = [[(n, p) for n, p in rest if p.dim() >= 2], [(n, p) for n, p in rest if p.dim() < 2]]
    return [*groups, hidden] if muon else groups


def parameter_groups(model: nn.Module, weight_decay: float,
                     muon: dict[str, object] | None = None) -> list[dict[str, object]]:
    """Split trainable parameters into a decayed (dim >= 2) and a non-decayed group: decay
    regularises matmul weights and embeddings, while biases and norm gains only shift or scale
    (as in GPT-2 and nanoGPT). With `muon` (`muon_group`) the blocks' matrices form a third
    group, decayed too, that `MuonWithAdamW` updates with Muon."""
    groups = _named_groups(model, muon is not None)
    out: list[dict[str, object]] = [
        {"params": [p for _, p in groups[0]], "weight_decay": weight_decay},
        {"params": [p for _, p in groups[1]], "weight_decay": 0.0}]
    if muon is not None:
        out.append({"params": [p for _, p in groups[2]], "weight_decay": weight_decay, **muon})
    return out


def muon_group(config: OptimConfig) -> dict[str, object]:
    """The Muon group's settings: the flag, its rate relative to AdamW's (the schedule sets
    every group's `lr` to AdamW's rate: see `muon.py`) and its momentum."""
    return {"muon": True, "lr_scale": config.muon_lr / config.learning_rate,
            "momentum": config.muon_momentum}


def state_by_name(state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """An `optimizer.state_dict()` (parameters numbered in `parameter_groups` order) keyed by
    parameter name instead, the form `torch.distributed.checkpoint` loads into sharded models."""
    muon = any(g.get("muon") for g in state["param_groups"])
    order = [n for group in _named_groups(model, muon) for n, _ in group]
    return {
        "state": {order[i]: v for i, v in state["state"].items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]}
                         for g in state["param_groups"]]}


def make_optimizer(model: nn.Module, config: OptimConfig, device: torch.device
                   ) -> torch.optim.Optimizer:
    """AdamW over the two groups, the fused kernel where this PyTorch offers it for the device;
    or, with `optimizer="muon"`, Muon for the blocks' matrices and AdamW for the rest."""
    if config.optimizer == "muon":
        return MuonWithAdamW(parameter_groups(model, config.weight_decay, muon_group(config)),
                             lr=config.learning_rate, betas=(config.beta1, config.beta2))
    fused_ok = ("fused" in inspect.signature(torch.optim.AdamW).parameters
                and device.type in ("cuda", "cpu"))
    return torch.optim.AdamW(parameter_groups(model, config.weight_decay),
                             lr=config.learning_rate, betas=(config.beta1, config.beta2),
                             fused=fused_ok or None)


def lr_at(step: int, max_lr: float, min_lr: float, warmup: int, progress: float) -> float:
    """Learning rate for an optimizer step: linear warmup (Adam's moment estimates are noisy at
    first), then cosine decay to `min_lr` to settle into a minimum (Loshchilov & Hutter 2017).

    Args:
        step: the optimizer step about to be taken (0-based).
        max_lr: peak learning rate, reached at the end of warmup.
        progress: fraction of training done, in [0, 1] (by steps, or by time with --max-time).
    """
    if step < warmup:
        return max_lr * (step + 1) / warmup
    progress = min(max(progress, 0.0), 1.0)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)
