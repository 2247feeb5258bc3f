"""The training loop: batches in, a better model (and checkpoints) out.

One optimizer step = `grad_accum` micro-batches of (batch_size, block_size) tokens: forward in
the chosen precision, loss, backward (gradients add up), then clip, AdamW step, zero grads.
Every `eval_interval` steps the loss on fixed train and val batches is measured and a
checkpoint saved (`latest/`, and `best/` when val improves). Everything random (batch
positions, dropout) is drawn from state that the checkpoint records, so `resume=True` continues
exactly where the run stopped (`resume.py` puts that state back). Started by torchrun, the
same loop trains with DDP or FSDP: the multi-process parts live in `distributed.py`
(wrapping, sharding, gradient sync, reductions, rank 0).

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

from gptscratch.data.batches import get_batch
from gptscratch.data.prepare import PreparedData
from gptscratch.errors import UserError
from gptscratch.evaluation.evaluate import estimate_loss
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT, lm_loss
from gptscratch.training.checkpoint import (
    link_checkpoint,
    load_weights,
    save_checkpoint,
)
from gptscratch.training.config import TrainConfig
from gptscratch.training.device import (
    choose_compile,
    choose_device,
    keep_freed_memory,
    set_cpu_float_mode,
)
from gptscratch.training.distributed import (
    agree,
    barrier,
    gather_full_state,
    gather_to_main,
    gradient_sync,
    init_distributed,
    mean_across_ranks,
    plain_model,
    rng_states,
    shard_model,
    sum_across_ranks,
    wrap_model,
)
from gptscratch.training.metrics import MetricsLog, format_duration, progress_line
from gptscratch.training.mfu import flops_per_token, peak_flops
from gptscratch.training.optimizer import freeze_parameters, make_optimizer
from gptscratch.training.precision import choose_precision
from gptscratch.training.resume import checkpoint_to_resume, restore_training_state
from gptscratch.training.schedule import lr_at

log = logging.getLogger("gptscratch.train")


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    step: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    elapsed: float


def total_steps(config: TrainConfig, train_tokens: int, block_size: int) -> int:
    """Optimizer steps to run: `max_iters`, or enough for `epochs` passes over the data."""
    if config.epochs is None:
        return config.max_iters
    per_step = config.batch_size * config.grad_accum * block_size
    return max(1, math.ceil(config.epochs * train_tokens / per_step))


def check_data_fits(data: PreparedData, block_size: int) -> None:
    for split in ("train", "val"):
        n = int(data.meta[f"{split}_tokens"])
        if n <= block_size:
            raise UserError(
                f"the {split} split has {n} tokens, fewer than one block of {block_size}+1; "
                f"use a smaller --block-size (e.g. {max(8, n // 4)}) or more text"
            )


def train(
    data: PreparedData,
    model_config: ModelConfig,
    config: TrainConfig,
    out_dir: Path | str,
    *,
    resume: bool = False,
    stop_at: int | None = None,
    extra_meta: dict[str, Any] | None = None,
    init_weights: Mapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train a GPT on prepared data, writing checkpoints and metrics under `out_dir`.

    Args:
        data: token files and tokenizer from `gptscratch.data.prepare`.
        model_config: the model shape; its vocab_size must match the tokenizer.
        config: optimisation, precision, evaluation and checkpoint settings.
        out_dir: run directory (latest/, best/, metrics.jsonl).
        resume: continue from `out_dir/latest` (weights, optimizer, RNG and data position).
        stop_at: stop after this step as if interrupted (a checkpoint is saved); continue later
            with resume=True. The schedule still follows the full run.
        extra_meta: JSON facts to store in checkpoints (e.g. the preset name, the data dir).
        init_weights: a state dict to start from instead of a random init (fine-tuning, see
            `training.finetune`); ignored on resume, where the checkpoint's weights win.
    """
    set_cpu_float_mode()
    out_dir = Path(out_dir)
    if model_config.vocab_size != data.tokenizer.vocab_size:
        raise UserError(f"model vocab_size ({model_config.vocab_size}) differs from the "
                        f"tokenizer's ({data.tokenizer.vocab_size}); build the config with the "
                        "tokenizer's vocab_size")
    check_data_fits(data, model_config.block_size)
    ctx, device = init_distributed(choose_device(config.device))
    precision = choose_precision(config.dtype, device, model_config.n_embd)
    if device.type == "cpu":
        keep_freed_memory()  # the same big tensors every step: reuse them, don't page-fault

    if config.fsdp and precision.needs_scaler:
        raise UserError("--fsdp trains in float32 or bfloat16, and this GPU would need float16; "
                        "use --dtype float32 or drop --fsdp")

    if not resume and (out_dir / "latest").exists():
        raise UserError(f"'{out_dir}' already holds a run; add --resume to continue it or "
                        "choose a new --out")

    torch.manual_seed(config.seed)
    model = GPT(model_config).to(device)
    ckpt = checkpoint_to_resume(out_dir, model_config, data) if resume else None
    if ckpt is not None:
        load_weights(ckpt, model)  # before FSDP shards the parameters
    elif init_weights is not None:
        model.load_state_dict(init_weights)
    freeze_parameters(model, config)
    if config.fsdp:
        shard_model(model, ctx)
    if ctx.rank > 0:
        torch.manual_seed(config.seed + ctx.rank)  # replicas start equal; dropout masks differ
    optimizer = make_optimizer(model, config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_scaler)
    data_rng = torch.Generator().manual_seed(config.seed)
    train_tokens, val_tokens = data.train_tokens(), data.val_tokens()
    max_steps = total_steps(config, len(train_tokens), model_config.block_size)
    step, best_val, elapsed_before = 0, math.inf, 0.0
    train_loss = val_loss = math.nan
    metrics = MetricsLog(out_dir / "metrics.jsonl")

    if ckpt is not None:
        point = restore_training_state(ckpt, optimizer, model, scaler, data_rng, ctx, device,
                                       config.seed)
        step, best_val, elapsed_before = point.step, point.best_val, point.elapsed
        train_loss, val_loss = point.train_loss, point.val_loss
        if ctx.is_main:
            metrics.truncate_after(step)

    log.info("device %s, precision %s (%s)%s", device, precision.name, precision.reason,
             f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else "")
    n_params = model.num_params()
    log.info("model: %s parameters (%.2fM), %d layers, %d heads, %d wide, context %d",
             f"{n_params:,}", n_params / 1e6, model_config.n_layer, model_config.n_head,
             model_config.n_embd, model_config.block_size)
    # Global batch: every rank trains batch_size sequences per micro-batch.
    tokens_per_step = (config.batch_size * ctx.world_size * config.grad_accum
                       * model_config.block_size)
    log.info("training for %d steps of %s tokens (batch %d x %d process%s x %d micro-batches "
             "x context %d)%s%s", max_steps, f"{tokens_per_step:,}", config.batch_size,
             ctx.world_size, "es" if ctx.enabled else "", config.grad_accum,
             model_config.block_size,
             f", at most {format_duration(config.max_time)}" if config.max_time else "",
             f"; FSDP: each process holds 1/{ctx.world_size} of the weights, gradients and "
             "optimizer state" if config.fsdp else "")
    # Only rank 0 reports MFU (and measures the ceiling, once per machine: see mfu.py).
    peak, peak_source = (peak_flops(device, precision.dtype, config.peak_tflops) if ctx.is_main
                         else (0.0, ""))
    flops_tok = flops_per_token(model_config, n_params)
    log.info("MFU measured against %.1f TFLOP/s per process (%s); the model needs %.1f "
             "MFLOPs per token", peak / 1e12, peak_source, flops_tok / 1e6)
    compile_model, compile_reason = choose_compile(  # by device and what is left of the run
        config.compile, device, max_steps - step,
        config.max_time - elapsed_before if config.max_time else None)
    log.info("torch.compile %s (%s)", "on" if compile_model else "off", compile_reason)
    fwd_model: torch.nn.Module = torch.compile(model) if compile_model else model  # type: ignore[assignment]
    train_model = wrap_model(fwd_model, ctx, device)

    saved_step = step if resume else -1

    def evaluate_and_save(rng: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
        """Measure train/val loss, log them, save `latest/` (and `best/` if val improved)."""
        nonlocal best_val, saved_step
        kwargs: dict[str, Any] = dict(
            batch_size=config.batch_size, block_size=model_config.block_size,
            iters=config.eval_iters, seed=config.seed + 1, device=device,
            autocast=precision.autocast, shard=ctx.shard,
            sum_across=sum_across_ranks if ctx.enabled else None)
        train_loss = estimate_loss(fwd_model, train_tokens, **kwargs)
        val_loss = estimate_loss(fwd_model, val_tokens, **kwargs)
        elapsed = elapsed_before + time.perf_counter() - start
        rank_rngs = gather_to_main(rng_states(rng[1], device), ctx)  # for exact resume
        to_save: torch.nn.Module = model
        if config.fsdp:  # collective: every rank sends its shards to rank 0
            weights, optimizer_state = gather_full_state(model, optimizer)
            if ctx.is_main:
                to_save = plain_model(model_config, weights)
        else:
            optimizer_state = optimizer.state_dict()
        is_best = val_loss < best_val
        best_val = min(best_val, val_loss)
        saved_step = step
        if not ctx.is_main:
            barrier(ctx)  # wait until rank 0 has written the checkpoint
            return train_loss, val_loss
        log.info("eval at step %d: train loss %.4f, val loss %.4f (perplexity %.2f)",
                 step, train_loss, val_loss, math.exp(val_loss))
        metrics.write({"step": step, "train_loss": train_loss, "val_loss": val_loss,
                       "val_perplexity": math.exp(val_loss), "elapsed": elapsed})
        state: dict[str, Any] = {"optimizer": optimizer_state,
                                 "scaler": scaler.state_dict(), "data_rng": rng[0],
                                 **rank_rngs[0]}
        if ctx.enabled:
            state["rank_rngs"] = rank_rngs
        meta = {"model_config": model_config.to_dict(), "train_config": config.to_dict(),
                "step": step, "max_steps": max_steps, "train_loss": train_loss,
                "val_loss": val_loss, "best_val_loss": best_val, "elapsed": elapsed,
                "tokenizer_kind": data.tokenizer.kind,
                "tokenizer_fingerprint": data.tokenizer.fingerprint(),
                "data_dir": str(data.dir.resolve()), "precision": precision.name,
                "world_size": ctx.world_size, **(extra_meta or {})}
        save_checkpoint(out_dir / "latest", to_save, data.tokenizer, meta, state)
        if is_best:
            link_checkpoint(out_dir / "latest", out_dir / "best")
        barrier(ctx)
        return train_loss, val_loss

    model.train()
    start = time.perf_counter()
    running = torch.zeros((), device=device)
    window_start, window_steps = start, 0
    # Random state as of the last completed step: what a checkpoint must record so a resumed
    # run draws the same batches and dropout masks as an uninterrupted one.
    rng = (data_rng.get_state(), torch.get_rng_state())
    try:
        while step < max_steps:
            elapsed = elapsed_before + time.perf_counter() - start
            if config.max_time:
                # Ranks follow rank 0's clock, so they agree on the LR and the last step.
                elapsed = agree(elapsed, ctx, device)
            if config.max_time and elapsed >= config.max_time:
                log.info("time budget of %s reached at step %d",
                         format_duration(config.max_time), step)
                break
            progress = step / max_steps
            if config.max_time:
                progress = max(progress, elapsed / config.max_time)
            lr = lr_at(step, config.learning_rate, config.min_lr, config.warmup_iters, progress)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for micro in range(config.grad_accum):
                x, y = get_batch(train_tokens, config.batch_size, model_config.block_size,
                                 data_rng, device, shard=ctx.shard)
                with gradient_sync(train_model, sync=micro == config.grad_accum - 1):
                    with precision.autocast():
                        loss = lm_loss(train_model(x), y) / config.grad_accum
                    scaler.scale(loss).backward()
                running += loss.detach()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window_steps += 1
            rng = (data_rng.get_state(), torch.get_rng_state())

            if step % config.log_interval == 0 or step == max_steps:
                now = time.perf_counter()
                # The only host sync of a step, once per log interval.
                mean_loss = mean_across_ranks(running, ctx).item() / window_steps
                tok_s = window_steps * tokens_per_step / (now - window_start)
                mfu = tok_s * flops_tok / (peak * ctx.world_size) if peak else None
                elapsed = elapsed_before + now - start
                per_step = (now - window_start) / window_steps
                remaining, shown_total = (max_steps - step) * per_step, max_steps
                by_time = max(0.0, config.max_time - elapsed) if config.max_time else math.inf
                if by_time < remaining:  # the time budget ends the run first
                    remaining, shown_total = by_time, step + round(by_time / per_step)
                log.info(progress_line(step, shown_total, mean_loss, lr, tok_s, elapsed,
                                       remaining, mfu, estimated_total=shown_total != max_steps))
                if ctx.is_main:
                    metrics.write({"step": step, "loss": mean_loss, "lr": lr,
                                   "tokens_per_s": tok_s, "mfu": mfu, "elapsed": elapsed})
                running.zero_()
                window_start, window_steps = time.perf_counter(), 0

            stopping = stop_at is not None and step >= stop_at
            if step % config.eval_interval == 0 or step == max_steps or stopping:
                train_loss, val_loss = evaluate_and_save(rng)
                window_start = time.perf_counter()  # keep evaluation out of tokens/s
            if stopping:
                log.info("stopped at step %d as asked; continue with --resume", step)
                break
    except KeyboardInterrupt:
        if ctx.enabled:
            # Saving needs every rank (evaluation and checkpoint are collective), and the
            # others may be interrupted at another point: keep the last checkpoint instead.
            log.warning("interrupted at step %d; under torchrun the last checkpoint (step %d) "
                        "is kept: continue with --resume", step, saved_step)
            raise
        log.warning("interrupted at step %d; saving a checkpoint (continue with --resume)", step)
        optimizer.zero_grad(set_to_none=True)
        evaluate_and_save(rng)
        raise
    if saved_step != step:
        train_loss, val_loss = evaluate_and_save(rng)
    elapsed = elapsed_before + time.perf_counter() - start
    log.info("done: step %d, val loss %.4f, best %.4f, checkpoints in %s", step, val_loss,
             best_val, out_dir)
    return TrainResult(out_dir, step, train_loss, val_loss, best_val, elapsed)
