"""AdamW with two parameter groups: weight decay for matrices, none for biases and norms.

Decay pulls weights towards zero, a regulariser that suits the matmul weights and embeddings
(2-D tensors); biases and LayerNorm gains (1-D) only shift or scale and are left free, as in
GPT-2 and nanoGPT. Frozen parameters (fine-tuning, `freeze_parameters`) are left out entirely.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from gptscratch.errors import UserError
from gptscratch.model.gpt import GPT
from gptscratch.training.config import FinetuneConfig, OptimConfig


def check_freeze_layers(freeze_layers: int, n_layer: int) -> None:
    """Raise a UserError unless the model has at least `freeze_layers` blocks."""
    if freeze_layers > n_layer:
        raise UserError(f"freeze_layers ({freeze_layers}) exceeds the model's {n_layer} "
                        f"layers; try --freeze-layers {n_layer - 1}")


def freeze_parameters(model: GPT, config: FinetuneConfig) -> None:
    """Stop gradients to the embeddings and / or the first `freeze_layers` blocks.

    Fine-tuning on little text can overwrite what a pretrained model knows; fixing the lower
    layers (which hold the most general features) and the embeddings limits that, and saves
    their gradients and optimizer state.
    """
    check_freeze_layers(config.freeze_layers, model.config.n_layer)
    if config.freeze_embeddings:
        model.transformer.wte.requires_grad_(False)
        model.transformer.wpe.requires_grad_(False)
    for block in model.transformer.blocks()[: config.freeze_layers]:
        block.requires_grad_(False)
    # The final LayerNorm is never frozen, so something always trains.


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Split trainable parameters into a decayed (dim >= 2) and a non-decayed group."""
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def state_by_name(state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """An `optimizer.state_dict()` (parameters numbered in `parameter_groups` order) keyed by
    parameter name instead, the form `torch.distributed.checkpoint` loads into sharded models.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # tied: once
    order = [n for n, p in named if p.dim() >= 2] + [n for n, p in named if p.dim() < 2]
    return {
        "state": {order[i]: v for i, v in state["state"].items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]}
                         for g in state["param_groups"]],
    }


def make_optimizer(
    model: nn.Module, config: OptimConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over the two groups; the fused kernel where this PyTorch offers it for the device."""
    fused_ok = "fused" in inspect.signature(torch.optim.AdamW).parameters and device.type in (
        "cuda",
        "cpu",
    )
    return torch.optim.AdamW(
        parameter_groups(model, config.weight_decay),
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        fused=fused_ok or None,
    )
