"""Resuming a run: check that a checkpoint fits the run asked for, then put back everything the
loop needs to continue as if it had never stopped (optimizer, grad scaler, batch generator,
every process's random state, the step and time spent). `setup.py` loads the weights first,
before FSDP would shard them, then calls `restore_training_state` once the optimizer exists.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

from gptscratch.checkpoints.checkpoint import Checkpoint, load_checkpoint
from gptscratch.data.token_files import PreparedData
from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig
from gptscratch.training.config import TrainConfig
from gptscratch.training.distributed import DistContext, inner_module, is_sharded
from gptscratch.training.optimizer import state_by_name

log = logging.getLogger("gptscratch.train")

LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")


@dataclass(frozen=True)
class ResumePoint:
    """Where the interrupted run stood at its last checkpoint."""

    step: int
    best_val: float
    elapsed: float  # wall-clock seconds of training so far
    train_loss: float
    val_loss: float


def checkpoint_to_resume(out_dir: Path, model_config: ModelConfig,
                         data: PreparedData) -> Checkpoint:
    """`out_dir`'s latest checkpoint, checked against the model shape and tokenizer asked for."""
    ckpt = load_checkpoint(out_dir, prefer="latest")
    saved, asked = ckpt.model_config.to_dict(), model_config.to_dict()
    diff = [k for k in saved if saved[k] != asked[k]]
    if diff:
        have = ", ".join(f"{k}={saved[k]}" for k in diff)
        want = ", ".join(f"{k}={asked[k]}" for k in diff)
        raise UserError(f"checkpoint '{ckpt.path}' has {have} but {want} was requested; "
                        "drop the model overrides or use a new --out")
    if ckpt.meta.get("tokenizer_fingerprint") != data.tokenizer.fingerprint():
        raise UserError(f"checkpoint '{ckpt.path}' was trained with a different tokenizer "
                        "than this data's; resume with the same --data")
    recorded = ckpt.meta.get("data_key")  # absent in checkpoints written before it existed
    if recorded is not None and recorded != data.meta.get("prepare_key"):
        raise UserError(f"checkpoint '{ckpt.path}' was trained on other data than "
                        f"'{data.dir}' ({data.meta.get('source')}); resume with the run's own "
                        "data (drop --data)")
    return ckpt


def check_same_optimizer(ckpt: Checkpoint, optimizer: str) -> None:
    """Refuse to resume with another `--optimizer` than the run's (AdamW's state does not fit
    Muon's groups, nor the reverse); checkpoints from before the option trained with AdamW."""
    was = ckpt.meta.get("train_config", {}).get("optimizer", "adamw")
    if was != optimizer:
        raise UserError(f"checkpoint '{ckpt.path}' was trained with --optimizer {was}, not "
                        f"{optimizer}; resume with --optimizer {was}, or start a new run from "
                        f"it with --init-from {ckpt.path} --optimizer {optimizer} --out NEW")


def restore_training_state(ckpt: Checkpoint, optimizer: torch.optim.Optimizer, model: nn.Module,
                           scaler: torch.amp.GradScaler, data_rng: torch.Generator,
                           ctx: DistContext, device: torch.device, seed: int) -> ResumePoint:
    """Load the optimizer, scaler and random state of `ckpt` into this run; return where it
    stood. At another number of processes it continues, not exactly, and a warning says so."""
    state = ckpt.training_state()
    load_optimizer_state(model, optimizer, state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    data_rng.set_state(state["data_rng"])
    saved_world = int(ckpt.meta.get("world_size", 1))
    restore_rng(state, saved_world, ctx, device, seed)
    if saved_world != ctx.world_size:
        log.warning("this run was trained with %d process(es) and now has %d: weights, "
                    "optimizer state, step and LR schedule continue, but each step now "
                    "trains on %d/%d as many sequences, and the batches drawn from here on "
                    "(and the dropout masks) differ from those of an uninterrupted "
                    "%d-process run", saved_world, ctx.world_size, ctx.world_size,
                    saved_world, saved_world)
    step = int(ckpt.meta["step"])
    log.info("resuming from %s at step %d", ckpt.path, step)
    return ResumePoint(step, float(ckpt.meta.get("best_val_loss", math.inf)),
                       float(ckpt.meta.get("elapsed", 0.0)), float(ckpt.meta["train_loss"]),
                       float(ckpt.meta["val_loss"]))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state, keyed by position (one process, DDP) or by
    parameter name (FSDP): a sharded model takes the named form, a plain one either."""
    # Decided by the groups' parameter lists: the state itself is empty before the first step.
    by_name = all(isinstance(p, str) for g in state["param_groups"] for p in g["params"])
    if not by_name and not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    if not by_name:
        state = state_by_name(state, inner_module(model))
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


def restore_rng(state: dict[str, Any], saved_world: int, ctx: DistContext,
                device: torch.device, seed: int) -> None:
    """Give this rank its random state back from a checkpoint's `state.pt`: at the same world
    size each rank continues its own streams; at another, rank 0 continues the saved ones and
    the others start fresh from the seed (the caller says so)."""
    mine: dict[str, Any] = state
    if saved_world == ctx.world_size and "rank_rngs" in state:
        mine = state["rank_rngs"][ctx.rank]
    elif saved_world != ctx.world_size and ctx.rank > 0:
        torch.manual_seed(seed + ctx.rank)
        return
    torch.set_rng_state(mine["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in mine:
        torch.cuda.set_rng_state(mine["cuda_rng"], device)


def resumed_provenance(meta: dict[str, Any], saved: TrainConfig, overrides: dict[str, Any],
                       out: Path) -> dict[str, Any] | None:
    """What a resumed fine-tuning run keeps of its checkpoint's provenance (None: not one): the
    source, and a LoRA run's adapters' settings and base, which overrides must leave alone.

    Raises:
        UserError: the overrides add LoRA to a run or change a LoRA run's settings.
    """
    if "lora" not in meta and overrides.get("lora_rank"):
        raise UserError("--lora-rank cannot be added to a run as it resumes; start a LoRA run "
                        f"from this one: --init-from {out} --lora-rank {overrides['lora_rank']} "
                        "--out NEW")
    changed = sorted(k for k in LORA_FIELDS
                     if k in overrides and overrides[k] != saved.to_dict()[k])
    if "lora" in meta and changed:
        raise UserError(f"--{changed[0].replace('_', '-')} cannot change when a LoRA run "
                        "resumes (its adapters have their shape); drop it, or start a new run")
    if "init_from" not in meta:
        return None
    kept = {"preset": None, "init_from": meta["init_from"]}
    return {**kept, "lora": meta["lora"]} if "lora" in meta else kept
