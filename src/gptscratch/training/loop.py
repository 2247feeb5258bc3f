"""The training loop: batches in, a better model (and checkpoints) out.

One optimizer step (`train_step`) = `grad_accum` micro-batches of (batch_size, block_size)
tokens: forward in the chosen precision, loss, backward (gradients add up), then clip, AdamW
step, zero grads. Every `eval_interval` steps `evaluate_and_save` measures the loss on fixed
train and val batches and saves a checkpoint (`latest/`, and `best/` when val improves).
Everything random (batch positions, dropout) is drawn from state that the checkpoint records,
so `resume=True` continues exactly where the run stopped (`resume.py` puts that state back).
Started by torchrun, the same loop trains with DDP or FSDP: the multi-process parts live in
`distributed.py` and `distributed_state.py`; `setup.py` builds the state this loop advances.

Speed: the loop never waits for the device inside a step (losses are summed on the device and
read once per log interval), batches come from memory-mapped token files (pinned and copied
asynchronously on CUDA), and the progress line shows tokens/s and MFU (`mfu.py`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptscratch.checkpoints.checkpoint import link_checkpoint, save_checkpoint
from gptscratch.data.batches import get_batch
from gptscratch.data.token_files import PreparedData
from gptscratch.evaluation.evaluate import estimate_loss
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import lm_loss
from gptscratch.training.config import TrainConfig
from gptscratch.training.distributed import (
    agree,
    barrier,
    gather_to_main,
    gradient_sync,
    mean_across_ranks,
    sum_across_ranks,
)
from gptscratch.training.distributed_state import gather_full_state, plain_model, rng_states
from gptscratch.training.metrics import eta, format_duration, progress_line
from gptscratch.training.schedule import lr_at
from gptscratch.training.setup import TrainRuntime, TrainState, set_up, start_runtime

log = logging.getLogger("gptscratch.train")


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    step: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    elapsed: float


def train(
    data: PreparedData,
    model_config: ModelConfig,
    config: TrainConfig,
    out_dir: Path | str,
    *,
    runtime: TrainRuntime | None = None,
    resume: bool = False,
    stop_at: int | None = None,
    extra_meta: dict[str, Any] | None = None,
    init_weights: Mapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train a GPT on prepared data, writing checkpoints and metrics under `out_dir`.

    Args:
        data: token files and tokenizer from `gptscratch.data.prepare`.
        model_config: the model shape; its vocab_size must match the tokenizer.
        config: the optimisation, run-length, system and fine-tuning sections.
        out_dir: run directory (latest/, best/, metrics.jsonl).
        runtime: the device, processes and precision from `setup.start_runtime` (started
            here if not given).
        resume: continue from `out_dir/latest` (weights, optimizer, RNG and data position).
        stop_at: stop after this step as if interrupted (a checkpoint is saved); continue later
            with resume=True. The schedule still follows the full run.
        extra_meta: JSON facts to store in checkpoints (e.g. the preset name).
        init_weights: a state dict to start from instead of a random init (fine-tuning);
            ignored on resume, where the checkpoint's weights win.
    """
    runtime = runtime or start_runtime(config.system, model_config.n_embd)
    state = set_up(data, model_config, config, Path(out_dir), runtime, resume=resume,
                   init_weights=init_weights, extra_meta=extra_meta)
    run = config.run
    state.model.train()
    state.started = time.perf_counter()
    state.window.restart()
    try:
        while state.step < state.max_steps:
            lr = learning_rate(state)
            if lr is None:
                break
            train_step(state, lr)
            if state.step % run.log_interval == 0 or state.step == state.max_steps:
                log_progress(state, lr)
            stopping = stop_at is not None and state.step >= stop_at
            if state.step % run.eval_interval == 0 or state.step == state.max_steps or stopping:
                paused = time.perf_counter()
                evaluate_and_save(state)
                state.window.paused += time.perf_counter() - paused  # not training time
            if stopping:
                log.info("stopped at step %d as asked; continue with --resume", state.step)
                break
    except KeyboardInterrupt:
        save_on_interrupt(state)
        raise
    if state.saved_step != state.step:
        evaluate_and_save(state)
    log.info("done: step %d, val loss %.4f, best %.4f, checkpoints in %s", state.step,
             state.val_loss, state.best_val, state.out_dir)
    return TrainResult(state.out_dir, state.step, state.train_loss, state.val_loss,
                       state.best_val, state.elapsed())


def learning_rate(state: TrainState) -> float | None:
    """The learning rate of the next step, or None when the time budget is spent.

    With a time budget the schedule follows the clock: progress is the larger of the share of
    steps and the share of time done. Ranks follow rank 0's clock, so they agree on the LR and
    on the last step.
    """
    run, optim, rt = state.config.run, state.config.optim, state.runtime
    progress = state.step / state.max_steps
    if run.max_time:
        elapsed = agree(state.elapsed(), rt.ctx, rt.device)
        if elapsed >= run.max_time:
            log.info("time budget of %s reached at step %d", format_duration(run.max_time),
                     state.step)
            return None
        progress = max(progress, elapsed / run.max_time)
    return lr_at(state.step, optim.learning_rate, optim.min_lr, optim.warmup_iters, progress)


def train_step(state: TrainState, lr: float) -> None:
    """One optimizer step at learning rate `lr`, over `grad_accum` micro-batches."""
    optim, rt = state.config.optim, state.runtime
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    for micro in range(optim.grad_accum):
        x, y = get_batch(state.train_tokens, optim.batch_size, state.model_config.block_size,
                         state.data_rng, rt.device, shard=rt.ctx.shard)
        # DDP / FSDP reduce the gradients once, after the last micro-batch.
        with gradient_sync(state.train_model, sync=micro == optim.grad_accum - 1):
            with rt.precision.autocast():
                loss = lm_loss(state.train_model(x), y) / optim.grad_accum
            state.scaler.scale(loss).backward()
        state.window.loss += loss.detach()
    if optim.grad_clip > 0:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), optim.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.window.steps += 1
    state.rng = (state.data_rng.get_state(), torch.get_rng_state())


def log_progress(state: TrainState, lr: float) -> None:
    """The progress line and a metrics.jsonl record for the steps since the last one."""
    ctx, window = state.runtime.ctx, state.window
    # The only host sync of a step, once per log interval.
    mean_loss = mean_across_ranks(window.loss, ctx).item() / window.steps
    per_step = window.seconds_per_step()
    tok_s = state.tokens_per_step / per_step
    mfu = (tok_s * state.flops_per_token / (state.peak_flops * ctx.world_size)
           if state.peak_flops else None)
    elapsed = state.elapsed()
    remaining, end_step = eta(state.step, state.max_steps, per_step, elapsed,
                              state.config.run.max_time)
    log.info(progress_line(state.step, end_step, mean_loss, lr, tok_s, elapsed, remaining, mfu,
                           estimated_total=end_step != state.max_steps, paused=window.paused))
    if ctx.is_main:
        state.metrics.write({"step": state.step, "loss": mean_loss, "lr": lr,
                             "tokens_per_s": tok_s, "mfu": mfu, "elapsed": elapsed})
    window.restart()


def evaluate_and_save(state: TrainState) -> None:
    """Measure train/val loss, log them, save `latest/` (and `best/` if val improved).

    Collective under torchrun: every rank evaluates its share, rank 0 writes.
    """
    rt, optim, run = state.runtime, state.config.optim, state.config.run
    kwargs: dict[str, Any] = dict(
        batch_size=optim.batch_size, block_size=state.model_config.block_size,
        iters=run.eval_iters, seed=run.seed + 1, device=rt.device,
        autocast=rt.precision.autocast, shard=rt.ctx.shard,
        sum_across=sum_across_ranks if rt.ctx.enabled else None)
    state.train_loss = estimate_loss(state.eval_model, state.train_tokens, **kwargs)
    state.val_loss = estimate_loss(state.eval_model, state.val_tokens, **kwargs)
    elapsed = state.elapsed()
    rank_rngs = gather_to_main(rng_states(state.rng[1], rt.device), rt.ctx)  # exact resume
    to_save: torch.nn.Module = state.model
    if state.config.system.fsdp:  # collective: every rank sends its shards to rank 0
        weights, optimizer_state = gather_full_state(state.model, state.optimizer)
        if rt.ctx.is_main:
            to_save = plain_model(state.model_config, weights)
    else:
        optimizer_state = state.optimizer.state_dict()
    is_best = state.val_loss < state.best_val
    state.best_val = min(state.best_val, state.val_loss)
    state.saved_step = state.step
    if rt.ctx.is_main:
        log.info("eval at step %d: train loss %.4f, val loss %.4f (perplexity %.2f)",
                 state.step, state.train_loss, state.val_loss, math.exp(state.val_loss))
        overfitting = state.overfit.observe(state.train_loss, state.val_loss)
        if overfitting:
            log.warning(overfitting)
        state.metrics.write({"step": state.step, "train_loss": state.train_loss,
                             "val_loss": state.val_loss,
                             "val_perplexity": math.exp(state.val_loss), "elapsed": elapsed})
        training_state: dict[str, Any] = {"optimizer": optimizer_state,
                                          "scaler": state.scaler.state_dict(),
                                          "data_rng": state.rng[0], **rank_rngs[0]}
        if rt.ctx.enabled:
            training_state["rank_rngs"] = rank_rngs
        save_checkpoint(state.out_dir / "latest", to_save, state.data.tokenizer,
                        checkpoint_meta(state, elapsed), training_state)
        if is_best:
            link_checkpoint(state.out_dir / "latest", state.out_dir / "best")
    barrier(rt.ctx)  # the other ranks wait until rank 0 has written the checkpoint


def checkpoint_meta(state: TrainState, elapsed: float) -> dict[str, Any]:
    """The JSON facts of a checkpoint: configs, progress, tokenizer, data, precision."""
    tokenizer = state.data.tokenizer
    return {"model_config": state.model_config.to_dict(),
            "train_config": state.config.to_dict(), "step": state.step,
            "max_steps": state.max_steps, "train_loss": state.train_loss,
            "val_loss": state.val_loss, "best_val_loss": state.best_val, "elapsed": elapsed,
            "tokenizer_kind": tokenizer.kind, "tokenizer_fingerprint": tokenizer.fingerprint(),
            "data_dir": str(state.data.dir.resolve()),
            "data_key": state.data.meta.get("prepare_key"),
            "precision": state.runtime.precision.name,
            "world_size": state.runtime.ctx.world_size, **state.extra_meta}


def save_on_interrupt(state: TrainState) -> None:
    """Ctrl-C: save a checkpoint of the last whole step (in one process), then stop."""
    if state.runtime.ctx.enabled:
        # Saving needs every rank (evaluation and checkpoint are collective), and the
        # others may be interrupted at another point: keep the last checkpoint instead.
        log.warning("interrupted at step %d; under torchrun the last checkpoint (step %d) "
                    "is kept: continue with --resume", state.step, state.saved_step)
        return
    log.warning("interrupted at step %d; saving a checkpoint (continue with --resume)",
                state.step)
    state.optimizer.zero_grad(set_to_none=True)
    evaluate_and_save(state)
