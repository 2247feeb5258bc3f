"""Training on several processes started by `torchrun`: DDP, or FSDP with `--fsdp`.

Each rank trains on its slice of every global batch, so 2 ranks see exactly what one process
would (tests/slow/test_distributed_runs.py); rank 0 writes the checkpoints, gathered whole under
FSDP, so either kind of run resumes the other's. Outside torchrun everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel

from gptscratch.errors import UserError
from gptscratch.model.gpt import GPT


@dataclass(frozen=True)
class DistContext:
    """Where this process sits among the training processes (1 process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0  # index on this machine: picks the GPU
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes metrics and checkpoints."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world_size): which slice of each global batch this rank trains on."""
        return self.rank, self.world_size


def context_from_env(env: dict[str, str] | None = None) -> DistContext:
    """Read torchrun's RANK / LOCAL_RANK / WORLD_SIZE; a single process without them."""
    env = dict(os.environ) if env is None else env
    if "WORLD_SIZE" not in env:
        return DistContext()
    try:
        ctx = DistContext(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")),
                          int(env["WORLD_SIZE"]))
    except ValueError:
        raise UserError("RANK, LOCAL_RANK and WORLD_SIZE must be integers (torchrun sets "
                        "them); unset them to train in one process") from None
    if not 0 <= ctx.rank < ctx.world_size:
        raise UserError(f"RANK ({ctx.rank}) must be in [0, WORLD_SIZE={ctx.world_size}); "
                        "start the processes with torchrun")
    return ctx


def is_main_process() -> bool:
    """True outside torchrun and on rank 0: the process that should talk to the user."""
    return context_from_env().is_main


def backend_for(device: torch.device) -> str:
    """NCCL moves gradients GPU-to-GPU (NVLink / InfiniBand); gloo is the CPU backend."""
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """Each rank on a multi-GPU machine owns the GPU of its local rank."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group when started by torchrun; return this rank and its device. Safe
    to call more than once (the API joins before preparing data, the trainer again)."""
    ctx = context_from_env()
    if not ctx.enabled:
        return ctx, device
    if device.type == "mps":
        raise UserError("multi-process training supports cuda and cpu, not mps; use "
                        "--device cpu or run without torchrun")
    device = rank_device(device, ctx)
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {ctx.local_rank} has no GPU (this machine has "
                            f"{torch.cuda.device_count()}); use --nproc_per_node "
                            f"{torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device))
    return ctx, device


def shutdown() -> None:
    """Leave the process group (torch warns at exit if a group is left open). Collect garbage
    first: FSDP's modules sit in reference cycles, and freed only as the interpreter shuts down,
    tensors gloo's threads still reference abort the process ("terminate called without an
    active exception"; seen once in CI, 2-process FSDP)."""
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def shard_model(model: GPT, ctx: DistContext) -> None:
    """Shard the model in place with FSDP2's `fully_shard`, one unit per Transformer block, so
    a rank holds one block's full weights at a time plus its 1/N shard of everything. Call it
    before building the optimizer, which must hold the sharded parameters (DTensors)."""
    if not ctx.enabled:
        raise UserError("this run trains with --fsdp, which shards the model across processes "
                        "started by torchrun; start it with `torchrun --nproc_per_node=N -m "
                        "gptscratch train ...`, or train in one process with --no-fsdp")
    for block in model.transformer.blocks():
        fully_shard(block)
    fully_shard(model)


def inner_module(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)  # under torch.compile's wrapper


def is_sharded(model: nn.Module) -> bool:
    return isinstance(inner_module(model), FSDPModule)


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DDP around the model when there are several ranks (it broadcasts rank 0's weights, so
    all replicas start equal); the model itself otherwise, or when FSDP already shards it."""
    if not ctx.enabled or is_sharded(model):
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                   else None)


def gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """Around a micro-batch's forward and backward: with sync=False, DDP (`no_sync`) and FSDP
    only add the gradients up locally; the step's last micro-batch reduces them once."""
    inner = inner_module(model)
    if isinstance(inner, FSDPModule):
        inner.set_requires_gradient_sync(sync)
    elif isinstance(model, DistributedDataParallel) and not sync:
        return model.no_sync()
    return contextlib.nullcontext()


def mean_across_ranks(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of a tensor over all ranks (the tensor itself in one process)."""
    if not ctx.enabled:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size


def sum_across_ranks(value: torch.Tensor) -> None:
    """Sum a CPU tensor over all ranks in place (a no-op in one process)."""
    if dist.is_initialized():
        work_on = value.cuda() if dist.get_backend() == "nccl" else value
        dist.all_reduce(work_on, op=dist.ReduceOp.SUM)
        value.copy_(work_on)


def agree(value: float, ctx: DistContext, device: torch.device) -> float:
    """Rank 0's value on every rank (its clock: all ranks follow one schedule, stop together)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def agree_any(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_rank_first(ctx: DistContext) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. preparing data into shared files), the others after."""
    if not ctx.is_main:
        barrier(ctx)
    yield
    if ctx.is_main:
        barrier(ctx)


def gather_to_main(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `obj`, in rank order, on rank 0 (and on the others, as all_gather does)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
