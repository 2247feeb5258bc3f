"""What a checkpoint holds when several processes train, and how each process gets it back.

Under FSDP each rank holds only its shard of the weights and optimizer state: a checkpoint
gathers the whole of both on rank 0 (`gather_full_state`), into the same files one process
writes, with the optimizer state keyed by parameter name, and `load_optimizer_state` loads
either form into a plain, DDP or sharded model. Every rank's random state (its dropout masks)
is saved too (`rng_states`) and given back on resume (`restore_rng`), so a resumed multi-process
run continues exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT
from gptscratch.training.distributed import DistContext, inner_module, is_sharded
from gptscratch.training.optimizer import state_by_name

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def gather_full_state(model: nn.Module, optimizer: torch.optim.Optimizer
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The whole weights and optimizer state of a sharded model, on rank 0's CPU (the other
    ranks get empty dicts). Collective: every rank must call it. The optimizer state is keyed
    by parameter name (`transformer.h.0.attn.c_attn.weight`), not by position."""
    return (get_model_state_dict(model, options=_FULL),
            get_optimizer_state_dict(model, optimizer, options=_FULL))


def plain_model(config: ModelConfig, weights: dict[str, Any]) -> GPT:
    """An ordinary GPT holding gathered weights: what a checkpoint is written from."""
    model = GPT(config)
    model.load_state_dict(weights)
    return model


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state, whichever kind of run wrote it.

    One process and DDP save `optimizer.state_dict()` (keyed by position); FSDP saves it keyed
    by parameter name. A sharded model takes the named form (each rank keeps its shard); a
    plain one takes either.
    """
    # Decided by the groups' parameter lists: the state itself is empty before the first step.
    by_name = all(isinstance(p, str) for g in state["param_groups"] for p in g["params"])
    if not by_name and not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    if not by_name:
        state = state_by_name(state, inner_module(model))
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))




def rng_states(torch_rng: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """This rank's random state for a checkpoint: the CPU generator as of the last finished
    step and, on CUDA, the GPU's (dropout masks on a GPU come from the latter)."""
    states = {"torch_rng": torch_rng}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng(state: dict[str, Any], saved_world: int, ctx: DistContext,
                device: torch.device, seed: int) -> None:
    """Give this rank its random state back from a checkpoint's `state.pt`.

    At the same world size each rank continues its own streams, so the run continues exactly.
    At another size rank 0 continues the saved streams and the other ranks start fresh ones
    from the seed: the caller should say so.
    """
    mine: dict[str, Any] = state
    if saved_world == ctx.world_size and "rank_rngs" in state:
        mine = state["rank_rngs"][ctx.rank]
    elif saved_world != ctx.world_size and ctx.rank > 0:
        torch.manual_seed(seed + ctx.rank)
        return
    torch.set_rng_state(mine["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in mine:
        torch.cuda.set_rng_state(mine["cuda_rng"], device)
