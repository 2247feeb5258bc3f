"""Evaluate and save, every `eval_interval` steps and when a run stops: the losses, a text
sample (`sample_at_step`, written to `metrics.jsonl` and the loggers; chat fine-tuning's is an
answer to a question; it draws only from its own generator, so a resumed run stays
bit-identical), and a checkpoint holding everything an exact resume (`resume.py`) needs. A
non-finite loss is never saved over the last good one.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
)

from gptscratch.checkpoints.checkpoint import link_checkpoint, save_checkpoint
from gptscratch.checkpoints.load import build_model
from gptscratch.data.packing import PackedRows
from gptscratch.data.token_files import Tokens
from gptscratch.data.tokenizers import Tokenizer, chat_template_of
from gptscratch.errors import UserError
from gptscratch.evaluation.evaluate import estimate_loss
from gptscratch.generation.engine import Engine, Row, RowRequest
from gptscratch.generation.stream import end_of_turn_rules
from gptscratch.model.config import SamplingConfig
from gptscratch.model.gpt import GPT
from gptscratch.training.distributed import barrier, gather_to_main, sum_across_ranks
from gptscratch.training.setup import TrainState

log = logging.getLogger("gptscratch.train")

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def evaluate_and_save(state: TrainState, sample: bool = True) -> None:
    """Measure train/val loss, log them, save `latest/` (and `best/` if val improved), and with
    `sample` draw `eval_sample_tokens` of text for the loggers and the report. Collective under
    torchrun: every rank evaluates its share, rank 0 writes."""
    rt, optim, run = state.runtime, state.config.optim, state.config.run
    kwargs: dict[str, Any] = dict(
        batch_size=optim.batch_size, block_size=state.model_config.block_size,
        iters=run.eval_iters, seed=run.seed + 1, device=rt.device,
        autocast=rt.precision.autocast, shard=rt.ctx.shard,
        sum_across=sum_across_ranks if rt.ctx.enabled else None)
    state.train_loss = estimate_loss(state.eval_model, state.train_tokens, **kwargs)
    state.val_loss = estimate_loss(state.eval_model, state.val_tokens, **kwargs)
    if not (math.isfinite(state.train_loss) and math.isfinite(state.val_loss)):
        raise UserError(
            f"evaluation at step {state.step} gave a non-finite loss (train {state.train_loss}, "
            f"val {state.val_loss}); the last good checkpoint, {state.out_dir / 'latest'} "
            f"(step {state.saved_step}), is kept; try a lower --learning-rate or --dtype "
            "float32, then --resume")
    elapsed = state.elapsed()
    rank_rngs = gather_to_main(_rng_state(state.rng[1], rt.device), rt.ctx)  # exact resume
    to_save, optimizer_state = _model_and_optimizer_state(state)
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
        # From the plain model (FSDP: the one gathered to save).
        if sample and run.eval_sample_tokens:
            state.metrics.write_sample(state.step, sample_at_step(
                to_save, state.data.tokenizer, run.eval_sample_tokens, run.seed, state.step,
                state.val_tokens))
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


def _model_and_optimizer_state(state: TrainState) -> tuple[GPT, dict[str, Any]]:
    """The model a checkpoint is written from and the optimizer's state. Under FSDP,
    collective: both gathered whole on rank 0's CPU (an ordinary GPT; the optimizer state keyed
    by parameter name), while the other ranks get their own model and empty dicts."""
    if not state.config.system.fsdp:
        return state.model, state.optimizer.state_dict()
    weights = get_model_state_dict(state.model, options=_FULL)
    optimizer_state = get_optimizer_state_dict(state.model, state.optimizer, options=_FULL)
    if not state.runtime.ctx.is_main:
        return state.model, optimizer_state
    # Built from the gathered tensors (`build_model`: no random init, so rank 0's random state,
    # which the checkpoint has already recorded, is left as an uninterrupted run has it).
    return build_model(state.model_config, weights), optimizer_state  # type: ignore[arg-type]


def _rng_state(torch_rng: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """This rank's random state (`resume.restore_rng` reads it): the CPU generator as of the
    last finished step and, on CUDA, the GPU's (which draws a GPU's dropout masks)."""
    states = {"torch_rng": torch_rng}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


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


SAMPLING = SamplingConfig(temperature=0.8)  # the CLI's default, so it reads like `sample`


def start_ids(tokenizer: Tokenizer) -> list[int]:
    """Where a sample starts: the end-of-text token (a document's start), else a newline,
    else the first token of the vocabulary."""
    if tokenizer.eot_id is not None:
        return [tokenizer.eot_id]
    return tokenizer.encode("\n")[-1:] or [0]


def sample_at_step(model: GPT, tokenizer: Tokenizer, tokens: int, seed: int, step: int,
                   val: Tokens | PackedRows | None = None) -> str:
    """`tokens` tokens of text from `model`, reproducible from (`seed`, `step`), in eval mode
    and in its weights' dtype (float32 during training: a short sample is cheap).

    Chat fine-tuning (`val` holds packed conversations) asks the first validation question
    instead, as `chat` would, and the model answers up to its end of turn: the sample is the
    question in the chat template's layout, then the answer (and the end, if it got there).
    """
    template = chat_template_of(tokenizer) if isinstance(val, PackedRows) else None
    prompt = val.first_prompt() if isinstance(val, PackedRows) else start_ids(tokenizer)
    rules = tuple(end_of_turn_rules(tokenizer)) if template is not None else ()
    row = Row(RowRequest(tuple(prompt), tokens, SAMPLING, seed=seed * 1_000_003 + step,
                         rules=rules), sink=lambda event: None)
    was_training = model.training
    model.eval()
    try:
        Engine(model, tokenizer).run_to_end([row])  # the decoding engine every generator uses
    finally:
        model.train(was_training)
    if template is None:
        return row.text
    return (tokenizer.decode(prompt) + row.text
            + (template.end if row.finish_reason == "stop" else ""))
