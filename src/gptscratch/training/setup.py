"""Setting up a training run: the runtime once, then the explicit state the loop works on.

`start_runtime` picks the device, processes and precision before any data is prepared; `set_up`
builds the `TrainState` (model, optimizer, random state, progress figures) `loop.py` advances.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptscratch.checkpoints.adapters import add_adapters
from gptscratch.checkpoints.checkpoint import Checkpoint
from gptscratch.checkpoints.load import build_model, load_model
from gptscratch.data.packing import PackedRows, pack_split
from gptscratch.data.token_files import PreparedData, TokenSplit, check_context_fits
from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig
from gptscratch.model.fast import choose_attention_path, store_frozen_in_bf16
from gptscratch.model.gpt import GPT
from gptscratch.model.lora import train_new_rows
from gptscratch.runtime.cpu import keep_freed_memory, set_cpu_float_mode
from gptscratch.runtime.device import (
    available_memory,
    check_fits,
    choose_compile,
    choose_device,
)
from gptscratch.runtime.precision import Precision, choose_precision
from gptscratch.training.advice import OverfitWatch, plan_warnings
from gptscratch.training.config import OptimConfig, RunConfig, SystemConfig, TrainConfig
from gptscratch.training.distributed import DistContext, init_distributed, shard_model, wrap_model
from gptscratch.training.memory import estimate_training_memory, fit_to_memory, memory_fix
from gptscratch.training.metrics import MetricsLog, ProgressWindow, format_duration
from gptscratch.training.mfu import flops_per_token, peak_flops
from gptscratch.training.optimizer import freeze_parameters, make_optimizer
from gptscratch.training.resume import (
    check_same_optimizer,
    checkpoint_to_resume,
    restore_training_state,
)

log = logging.getLogger("gptscratch.train")


@dataclass(frozen=True)
class TrainRuntime:
    """Where this process trains: its place among the processes, its device, its precision."""

    ctx: DistContext
    device: torch.device
    precision: Precision


def start_runtime(system: SystemConfig, n_embd: int) -> TrainRuntime:
    """Choose the device, join torchrun's processes (if started by it) and the precision.

    Raises:
        UserError: a device or dtype this machine cannot run, or FSDP with float16.
    """
    set_cpu_float_mode()
    ctx, device = init_distributed(choose_device(system.device))
    precision = choose_precision(system.dtype, device, n_embd)
    if system.fsdp and precision.needs_scaler:
        raise UserError("--fsdp trains in float32 or bfloat16 (float16's loss scaling is not "
                        "wired up for sharded gradients); use --dtype bfloat16 or float32")
    if device.type == "cpu":
        keep_freed_memory()  # the same big tensors every step: reuse them, don't page-fault
    return TrainRuntime(ctx, device, precision)


@dataclass
class TrainState:
    """Everything the loop reads and advances; what a checkpoint records comes from here."""

    data: PreparedData
    train_tokens: TokenSplit | PackedRows  # text, or conversations (chat fine-tuning)
    val_tokens: TokenSplit | PackedRows
    model_config: ModelConfig
    config: TrainConfig
    out_dir: Path
    runtime: TrainRuntime
    model: GPT  # the plain module: checkpoints are taken from it
    eval_model: nn.Module  # compiled or not, never wrapped: evaluation runs on each rank
    train_model: nn.Module  # what a step runs: eval_model, wrapped in DDP for several ranks
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    data_rng: torch.Generator  # which batches come next
    max_steps: int
    metrics: MetricsLog
    extra_meta: dict[str, Any]
    tokens_per_step: int  # the global batch: every process, every micro-batch
    flops_per_token: float
    peak_flops: float  # what MFU is measured against; 0 where it is not reported
    window: ProgressWindow
    # Random state as of the last completed step: what a checkpoint must record so a resumed
    # run draws the same batches and dropout masks as an uninterrupted one.
    rng: tuple[torch.Tensor, torch.Tensor]
    step: int = 0
    best_val: float = math.inf
    train_loss: float = math.nan
    val_loss: float = math.nan
    saved_step: int = -1  # the step of the last checkpoint
    bad_steps: int = 0  # steps in a row whose gradients were not finite
    overfit: OverfitWatch = field(default_factory=OverfitWatch)
    elapsed_before: float = 0.0  # training seconds of earlier processes (resume)
    first_step: int = 0  # the step this process started from (0, or where it resumed)
    # Steps between evaluations; 0 while a time-budgeted run is still timing its first steps.
    eval_every: int = 0
    timing_from: float | None = None  # when the timed first steps began
    evaluations: int = 0  # evaluations this process has run, and their seconds
    eval_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        """Training seconds so far, earlier processes' included."""
        return self.elapsed_before + time.perf_counter() - self.started


def total_steps(run: RunConfig, optim: OptimConfig, train_tokens: int, block_size: int) -> int:
    """Optimizer steps to run: `max_iters`, or enough for `epochs` passes over the data."""
    if run.epochs is None:
        return run.max_iters
    per_step = optim.batch_size * optim.grad_accum * block_size
    return max(1, math.ceil(run.epochs * train_tokens / per_step))


def check_training_fits(model: ModelConfig, config: TrainConfig, runtime: TrainRuntime,
                        fine_tuning: bool = False) -> TrainConfig:
    """Refuse a run whose step cannot fit in the device's free memory (a UserError naming what
    to change). With `fit`, first split the step into micro-batches (and checkpoint
    activations) until it fits (`memory.fit_to_memory`). Returns the config to train with."""
    low_precision = runtime.precision.dtype != torch.float32
    free = available_memory(runtime.device)
    if config.system.fit and free is not None:
        fitted = fit_to_memory(model, config, free, runtime.ctx.world_size, low_precision)
        if fitted is not None and fitted != config:
            estimate = estimate_training_memory(model, fitted, runtime.ctx.world_size,
                                                low_precision)
            log.info("--fit: %d sequences a step do not fit the %.1f GiB free at once: %d "
                     "micro-batches of %d%s (the same %d sequences a step; %s)",
                     config.optim.batch_size * config.optim.grad_accum, free / 2**30,
                     fitted.optim.grad_accum, fitted.optim.batch_size,
                     ", activation checkpointing on" if fitted.system.activation_checkpointing
                     and not config.system.activation_checkpointing else "",
                     fitted.optim.batch_size * fitted.optim.grad_accum, estimate.describe())
            config = fitted
    estimate = estimate_training_memory(model, config, runtime.ctx.world_size, low_precision)
    check_fits(estimate.total, runtime.device,
               f"training this model at batch {config.optim.batch_size} x "
               f"{model.block_size} ({estimate.describe()})",
               "even one sequence a micro-batch with activation checkpointing does not fit; "
               "use a smaller model or --block-size" if config.system.fit
               else memory_fix(config, fine_tuning) + ", or --fit to choose")
    return config


def check_run(data: PreparedData, model_config: ModelConfig) -> None:
    """Refuse, before anything is built, a run that cannot work on this data."""
    if model_config.vocab_size != data.tokenizer.vocab_size:
        raise UserError(f"model vocab_size ({model_config.vocab_size}) differs from the "
                        f"tokenizer's ({data.tokenizer.vocab_size}); build the config with the "
                        "tokenizer's vocab_size")
    if not data.is_chat:  # packed conversations are padded to the context
        check_context_fits(int(data.meta["train_tokens"]), int(data.meta["val_tokens"]),
                           model_config.block_size)
    for split in (data.train_tokens(), data.val_tokens()):
        if len(split) and split.max() >= model_config.vocab_size:  # one pass: ~0.3 s/GB
            raise UserError(f"'{data.dir}' holds token ids beyond its vocabulary of "
                            f"{model_config.vocab_size}; it is damaged: prepare the data again")


def set_up(data: PreparedData, model_config: ModelConfig, config: TrainConfig, out_dir: Path,
           runtime: TrainRuntime, *, resume: bool = False,
           init_weights: Mapping[str, torch.Tensor] | None = None,
           extra_meta: dict[str, Any] | None = None) -> TrainState:
    """Build the state of a run: fresh, from `init_weights` (fine-tuning), or resumed from
    `out_dir/latest`."""
    check_run(data, model_config)
    ctx, device, seed = runtime.ctx, runtime.device, config.run.seed
    ckpt = checkpoint_to_resume(out_dir, model_config, data) if resume else None
    if ckpt is not None:
        check_same_optimizer(ckpt, config.optim.optimizer)
    lora = ckpt.meta.get("lora") if ckpt is not None else (extra_meta or {}).get("lora")
    model = _build_model(model_config, config, runtime, ckpt, init_weights, lora)
    optimizer = make_optimizer(model, config.optim, device)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.precision.needs_scaler)
    data_rng = torch.Generator().manual_seed(seed)
    metrics = MetricsLog(out_dir / "metrics.jsonl")
    point = None
    if ckpt is not None:
        point = restore_training_state(ckpt, optimizer, model, scaler, data_rng, ctx, device, seed)
        if ctx.is_main:
            metrics.truncate_after(point.step)
    train_tokens, val_tokens = _splits(data, model_config.block_size, config)
    # An epoch of packed conversations is a pass over its rows, padding and all.
    epoch = (len(train_tokens) * model_config.block_size if isinstance(train_tokens, PackedRows)
             else int(data.meta["train_tokens"]))
    max_steps = total_steps(config.run, config.optim, epoch, model_config.block_size)
    n_params = model.num_params()
    optim = config.optim
    tokens_per_step = optim.batch_size * ctx.world_size * optim.grad_accum * model_config.block_size
    # Only rank 0 reports MFU (and measures the ceiling, once per machine: see mfu.py).
    peak, peak_source = (peak_flops(device, runtime.precision.dtype, config.system.peak_tflops)
                         if ctx.is_main else (0.0, ""))
    state = TrainState(
        data=data, train_tokens=train_tokens, val_tokens=val_tokens,
        model_config=model_config, config=config, out_dir=out_dir, runtime=runtime,
        model=model, eval_model=model, train_model=model, optimizer=optimizer, scaler=scaler,
        data_rng=data_rng, max_steps=max_steps, metrics=metrics,
        extra_meta=dict(extra_meta or {}), tokens_per_step=tokens_per_step,
        flops_per_token=flops_per_token(model_config, n_params), peak_flops=peak,
        window=ProgressWindow(device), rng=(data_rng.get_state(), torch.get_rng_state()))
    if point is not None:
        state.step, state.best_val, state.saved_step = point.step, point.best_val, point.step
        state.first_step = point.step
        state.elapsed_before = point.elapsed
        state.train_loss, state.val_loss = point.train_loss, point.val_loss
    _log_plan(state, n_params, peak_source)
    _compile_and_wrap(state)
    return state


def _splits(data: PreparedData, block_size: int, config: TrainConfig) -> tuple[
        TokenSplit | PackedRows, TokenSplit | PackedRows]:
    """What batches are drawn from: the ids of text, or conversations packed into rows."""
    if not data.is_chat:
        return data.train_tokens(), data.val_tokens()
    ft = config.finetune
    train, val = (pack_split(data, split, block_size, ft.train_on, ft.strict)
                  for split in ("train", "val"))
    log.info("conversations packed into %s train and %s val rows of %d ids; the loss is taken "
             "on %s", f"{len(train):,}", f"{len(val):,}", block_size + 1,
             "the answers only" if ft.train_on == "answers" else "every token")
    return train, val


def _build_model(model_config: ModelConfig, config: TrainConfig, runtime: TrainRuntime,
                 ckpt: Checkpoint | None, init_weights: Mapping[str, torch.Tensor] | None,
                 lora: Mapping[str, Any] | None = None) -> GPT:
    """The GPT on its device: the checkpoint's, given weights (they become the parameters, no
    copy) or random (seeded); frozen, or with new LoRA adapters, as fine-tuning asks."""
    ctx, seed = runtime.ctx, config.run.seed
    torch.manual_seed(seed)
    if ckpt is not None:
        model = load_model(ckpt).model  # before FSDP shards the parameters
    elif init_weights is not None:
        model = build_model(model_config, init_weights)
        if lora is not None:
            add_adapters(model, lora)
    else:
        model = GPT(model_config)
    if lora is None:
        freeze_parameters(model, config.finetune)
    else:
        if lora.get("new_rows_from") is not None:  # a chat template's markers: trained too
            train_new_rows(model, int(lora["new_rows_from"]))
        if runtime.precision.dtype == torch.bfloat16:
            store_frozen_in_bf16(model)
    model.to(runtime.device)
    choose_attention_path(model, runtime.device, runtime.precision.dtype)
    model.activation_checkpointing = config.system.activation_checkpointing
    if config.system.fsdp:
        shard_model(model, ctx)
    if ctx.rank > 0:
        torch.manual_seed(seed + ctx.rank)  # replicas start equal; dropout masks differ
    return model


def _log_plan(state: TrainState, n_params: int, peak_source: str) -> None:
    """What the run will do, on what: device, model, steps and batch, MFU reference."""
    rt, mc, optim, run = state.runtime, state.model_config, state.config.optim, state.config.run
    ctx, device = rt.ctx, rt.device
    log.info("device %s, precision %s (%s)%s", device, rt.precision.name, rt.precision.reason,
             f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else "")
    log.info("model: %s parameters (%.2fM), %d layers, %d heads, %d wide, context %d",
             f"{n_params:,}", n_params / 1e6, mc.n_layer, mc.n_head, mc.n_embd, mc.block_size)
    estimate = estimate_training_memory(mc, state.config, ctx.world_size,
                                        low_precision=rt.precision.dtype != torch.float32)
    log.info("memory estimate per process: %s", estimate.describe())
    length = (f"for {format_duration(run.max_time)} (or {state.max_steps:,} steps if they "
              f"come first; how many fit is timed over the first steps)" if run.max_time
              else f"for {state.max_steps:,} steps")
    log.info("training %s of %s tokens a step (batch %d x %d process%s x %d micro-batches "
             "x context %d)%s", length, f"{state.tokens_per_step:,}",
             optim.batch_size, ctx.world_size, "es" if ctx.enabled else "", optim.grad_accum,
             mc.block_size,
             f"; FSDP: each process holds 1/{ctx.world_size} of the weights, gradients and "
             "optimizer state" if state.config.system.fsdp else "")
    log.info("MFU measured against %.1f TFLOP/s per process (%s); the model needs %.1f "
             "MFLOPs per token", state.peak_flops / 1e12, peak_source, state.flops_per_token / 1e6)
    for warning in plan_warnings(int(state.data.meta["train_tokens"]), n_params,
                                 state.tokens_per_step, state.max_steps, optim.warmup_iters,
                                 timed=bool(run.max_time)):
        log.warning(warning)


def _compile_and_wrap(state: TrainState) -> None:
    """torch.compile by device and what is left of the run; DDP around it for several ranks."""
    run, rt = state.config.run, state.runtime
    compile_model, reason = choose_compile(
        state.config.system.compile, rt.device, state.max_steps - state.step,
        run.max_time - state.elapsed_before if run.max_time else None)
    log.info("torch.compile %s (%s)", "on" if compile_model else "off", reason)
    eval_model: nn.Module = torch.compile(state.model) if compile_model else state.model  # type: ignore[assignment]
    state.eval_model = eval_model
    state.train_model = wrap_model(eval_model, rt.ctx, rt.device)
