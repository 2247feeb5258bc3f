"""The training loop: batches in, a better model (and checkpoints) out.

`run` advances the state `setup.set_up` builds, one step (`train_step`) at a time, evaluating
and saving every `eval_interval` steps (`checkpointing.py`), under torchrun too. A step reads
one number back from the device (`check_finite`). For learners: docs/concepts/training-loop.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptscratch.data.batches import get_batch
from gptscratch.data.packing import IGNORE, PackedRows
from gptscratch.data.token_files import PreparedData
from gptscratch.errors import Interrupted, UserError
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import lm_loss
from gptscratch.training.checkpointing import evaluate_and_save
from gptscratch.training.config import TrainConfig
from gptscratch.training.distributed import agree, gradient_sync, mean_across_ranks
from gptscratch.training.metrics import eta, format_duration, progress_line, read_metrics
from gptscratch.training.mfu import model_flops_utilisation
from gptscratch.training.optimizer import lr_at
from gptscratch.training.setup import TrainRuntime, TrainState, set_up
from gptscratch.training.signals import StopRequests
from gptscratch.training.tracking import open_sinks

log = logging.getLogger("gptscratch.train")

EVALUATIONS = 20  # what eval_interval 0 aims at over a run: enough points for a curve
TIMED_STEPS = 10  # steps (after the first, which warms up) a time-budgeted run times to plan
SAMPLE_EVERY = 4  # evaluations between text samples (a sample costs as much as the losses)


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    step: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    elapsed: float


def run(data: PreparedData, model_config: ModelConfig, config: TrainConfig, out_dir: Path | str,
        runtime: TrainRuntime, *, resume: bool = False, stop_at: int | None = None,
        extra_meta: dict[str, Any] | None = None,
        init_weights: Mapping[str, torch.Tensor] | None = None) -> TrainResult:
    """Train a GPT on prepared data, writing checkpoints and metrics under `out_dir`.

    Args:
        model_config: the model shape; its vocab_size must match the tokenizer.
        runtime: the device, processes and precision from `setup.start_runtime`.
        resume: continue exactly from `out_dir/latest` (weights, optimizer, RNG, data position).
        stop_at: stop after this step as if interrupted (a checkpoint is saved; the schedule
            still follows the full run).
        extra_meta: JSON facts to store in checkpoints (e.g. the preset name).
        init_weights: a state dict to start from instead of a random init (fine-tuning);
            ignored on resume.
    """
    state = set_up(data, model_config, config, Path(out_dir), runtime, resume=resume,
                   init_weights=init_weights, extra_meta=extra_meta)
    if runtime.ctx.is_main:
        state.metrics.attach(open_sinks(
            config.run.loggers, state.out_dir, {**model_config.to_dict(), **config.to_dict()},
            read_metrics(state.metrics.path) if state.metrics.path.exists() else [],
            state.step if resume else None))
    state.model.train()
    state.started = time.perf_counter()
    state.window.restart()
    plan_evaluations(state)
    signum = None
    with StopRequests().watching() as stops, closing(state.metrics):
        while state.step < state.max_steps:
            lr = learning_rate(state)
            if lr is None:
                break
            train_step(state, lr)
            signum = stops.requested(state.runtime.ctx, state.runtime.device)
            if not after_step(state, lr, stop_at, signum is not None):
                break
        if state.saved_step != state.step:
            evaluate(state, last=True)
    if signum is not None:
        raise Interrupted(signum, _interrupted_message(state, signum))
    log.info("done: step %d, val loss %.4f, best %.4f, checkpoints in %s", state.step,
             state.val_loss, state.best_val, state.out_dir)
    log.info("%d evaluations took %.1f s of this run's %.1f s", state.evaluations,
             state.eval_seconds, state.elapsed() - state.elapsed_before)
    return TrainResult(state.out_dir, state.step, state.train_loss, state.val_loss,
                       state.best_val, state.elapsed())


def after_step(state: TrainState, lr: float, stop_at: int | None, signalled: bool) -> bool:
    """Log, evaluate and save as the run's intervals (or a stop) ask; False to stop."""
    run = state.config.run
    if not state.eval_every:
        plan_evaluations(state)
    if state.step % run.log_interval == 0 or state.step == state.max_steps:
        log_progress(state, lr)
    stopping = signalled or (stop_at is not None and state.step >= stop_at)
    due = bool(state.eval_every) and state.step % state.eval_every == 0
    last = state.step == state.max_steps or stopping
    if due or last:
        paused = time.perf_counter()
        evaluate(state, last)
        state.window.paused += time.perf_counter() - paused  # not training time
    if stopping and not signalled:
        log.info("stopped at step %d as asked; continue with --resume", state.step)
    return not stopping


def evaluate(state: TrainState, last: bool = False) -> None:
    """Evaluate and save (`evaluate_and_save`), counting the evaluations and their seconds;
    a text sample at the first evaluation, every SAMPLE_EVERY-th and the `last`."""
    start = time.perf_counter()
    evaluate_and_save(state, sample=last or state.evaluations % SAMPLE_EVERY == 0)
    state.evaluations += 1
    state.eval_seconds += time.perf_counter() - start


def plan_evaluations(state: TrainState) -> None:
    """Fix the steps between evaluations (`state.eval_every`): `eval_interval` where it is
    set; else about EVALUATIONS over the planned length. That is `max_steps`, or for a run
    with a time budget the steps that fit in it at the speed of its first steps: after the
    first (warm-up) step, TIMED_STEPS are timed by rank 0's clock, and what that plans is logged
    (the step cap too, where it ends the run first). Called before the first step, then after
    each step until a plan is made."""
    run = state.config.run
    if run.eval_interval or not run.max_time:
        state.eval_every = run.eval_interval or max(1, math.ceil(state.max_steps / EVALUATIONS))
        return
    if state.step == state.first_step + 1:
        state.timing_from = time.perf_counter()
    if state.timing_from is None or state.step < state.first_step + 1 + TIMED_STEPS:
        return
    rt = state.runtime
    per_step = agree((time.perf_counter() - state.timing_from) / TIMED_STEPS, rt.ctx, rt.device)
    _, end = eta(state.step, state.max_steps, per_step, state.elapsed(), run.max_time)
    state.eval_every = max(1, round(end / EVALUATIONS))
    budget = format_duration(run.max_time)
    fits = (f"the {state.max_steps:,}-step cap ends the run before the {budget} budget"
            if end >= state.max_steps else
            f"about {end:,} steps fit in the {budget} budget (the cap is {state.max_steps:,})")
    log.info("at %.3f s a step (steps %d-%d), %s; evaluating every %d steps", per_step,
             state.first_step + 2, state.step, fits, state.eval_every)


def _interrupted_message(state: TrainState, signum: int) -> str:
    import signal

    return (f"{signal.Signals(signum).name}: stopped at step {state.step}, checkpoint saved in "
            f"{state.out_dir / 'latest'}; continue with: gptscratch train --out "
            f"{state.out_dir} --resume")


def learning_rate(state: TrainState) -> float | None:
    """The learning rate of the next step, or None when the time budget is spent. With a budget,
    progress is the larger of the shares of steps and of time done, by rank 0's clock so that
    all ranks agree on the LR and the last step."""
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
    """One optimizer step at learning rate `lr`, over `grad_accum` micro-batches; a step whose
    gradient norm is not finite updates nothing (`check_finite`)."""
    optim, rt = state.config.optim, state.runtime
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    step_loss = torch.zeros((), device=rt.device)
    # Drawn first (ids only, small): a masked loss counts the step's targets before the first
    # backward.
    batches = [get_batch(state.train_tokens, optim.batch_size, state.model_config.block_size,
                         state.data_rng, rt.device, shard=rt.ctx.shard)
               for _ in range(optim.grad_accum)]
    per_target = _per_target(batches, state) if isinstance(state.train_tokens, PackedRows) \
        else None
    for micro, (x, y) in enumerate(batches):
        # DDP / FSDP reduce the gradients once, after the last micro-batch.
        with gradient_sync(state.train_model, sync=micro == optim.grad_accum - 1):
            with rt.precision.autocast():
                if per_target is None:
                    loss = lm_loss(state.train_model(x), y) / optim.grad_accum
                else:  # a masked loss: summed, each target weighed as one of the step's
                    loss = lm_loss(state.train_model(x), y, reduction="sum") * per_target
            state.scaler.scale(loss).backward()
        step_loss += loss.detach()
    state.scaler.unscale_(state.optimizer)
    norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(),
                                          optim.grad_clip if optim.grad_clip > 0 else math.inf)
    if check_finite(state, norm):
        state.scaler.step(state.optimizer)
        state.window.loss += step_loss
        full = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a DTensor
        # On the device, no sync; float16's scaler may still skip an inf norm: counted as 0.
        state.window.grad_norm += torch.where(torch.isfinite(full), full, 0.0).detach()
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.window.steps += 1
    state.rng = (state.data_rng.get_state(), torch.get_rng_state())


def _per_target(batches: list[tuple[torch.Tensor, torch.Tensor]],
                state: TrainState) -> torch.Tensor:
    """The weight of one target in a masked loss (chat fine-tuning), whose micro-batches and
    ranks hold different numbers of targets: 1 / (the step's targets over all ranks / world
    size). Summed over a rank's micro-batches, then averaged over the ranks (as DDP averages
    their gradients), each micro-batch's summed loss times it is the mean over the whole
    step's targets: what one process drawing the global batch at once computes. (A mean per
    micro-batch would weigh a rank's few targets as much as another's many.)"""
    ctx = state.runtime.ctx
    count = torch.stack([(y != IGNORE).sum() for _, y in batches]).sum().float()  # no sync
    mean = mean_across_ranks(count, ctx)
    return 1.0 / mean.clamp(min=1.0 / ctx.world_size)  # a step without targets: loss 0


def check_finite(state: TrainState, norm: torch.Tensor) -> bool:
    """Whether this step's gradients may update the model: their norm is finite (the same on
    every rank, as the gradients are reduced). A float16 run's GradScaler decides for itself.

    Raises:
        UserError: `max_bad_steps` steps in a row were not finite: the run has diverged.
    """
    if state.runtime.precision.needs_scaler:
        return True
    full = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a DTensor
    if bool(torch.isfinite(full)):  # the one host sync a step needs
        state.bad_steps = 0
        return True
    state.bad_steps += 1
    state.window.skipped += 1
    limit = state.config.optim.max_bad_steps
    log.warning("step %d: the gradient norm is %s; the update is skipped (%d in a row, "
                "%d allowed)", state.step + 1, float(full), state.bad_steps, limit)
    if state.bad_steps >= limit:
        raise UserError(
            f"training diverged: {limit} steps in a row (up to step {state.step + 1}) had a "
            f"non-finite loss or gradient; the last good checkpoint is "
            f"{state.out_dir / 'latest'} (step {state.saved_step}); try a lower "
            f"--learning-rate (now {state.config.optim.learning_rate:g}), --dtype float32, or "
            "--grad-clip 1.0, then --resume")
    return False


def log_progress(state: TrainState, lr: float) -> None:
    """The progress line and a metrics.jsonl record for the steps since the last one."""
    ctx, window = state.runtime.ctx, state.window
    good = max(1, window.steps - window.skipped)  # skipped steps' losses are not counted
    mean_loss = mean_across_ranks(window.loss, ctx).item() / good
    per_step = window.seconds_per_step()
    tok_s = state.tokens_per_step / per_step
    mfu = model_flops_utilisation(tok_s, state.flops_per_token,
                                  state.peak_flops * ctx.world_size)
    elapsed = state.elapsed()
    remaining, end_step = eta(state.step, state.max_steps, per_step, elapsed,
                              state.config.run.max_time)
    log.info(progress_line(state.step, end_step, mean_loss, lr, tok_s, elapsed, remaining, mfu,
                           estimated_total=end_step != state.max_steps, paused=window.paused))
    if ctx.is_main:
        record = {"step": state.step, "loss": mean_loss, "lr": lr, "tokens_per_s": tok_s,
                  "mfu": mfu, "grad_norm": window.grad_norm.item() / good,  # before clipping
                  "elapsed": elapsed}
        if window.skipped:
            record["skipped_updates"] = window.skipped
        state.metrics.write(record)
    window.restart()
