"""Measuring a model: cross-entropy loss, perplexity and bits per byte (the total information
over the text's UTF-8 size, comparable across tokenizers). `estimate_loss` is the trainer's
quick look; `evaluate_tokens` scores a whole token sequence; `evaluate` (`gptscratch eval`)
scores a checkpoint on its own val split or on any text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptscratch.checkpoints.load import check_quantize, load_model
from gptscratch.data.batches import get_batch
from gptscratch.data.packing import IGNORE, PackedRows
from gptscratch.data.sources import read_text_source
from gptscratch.data.token_files import Tokens, is_prepared_dir, load_prepared
from gptscratch.errors import UserError
from gptscratch.model.gpt import GPT, lm_loss
from gptscratch.runtime.precision import choose_precision

AutocastFactory = Callable[[], contextlib.AbstractContextManager[None]]


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, tokens: Tokens | PackedRows, *, batch_size: int,
                  block_size: int, iters: int, seed: int, device: torch.device,
                  autocast: AutocastFactory = contextlib.nullcontext,
                  shard: tuple[int, int] = (0, 1),
                  sum_across: Callable[[torch.Tensor], None] | None = None) -> float:
    """Mean loss over `iters` random batches drawn with a fixed seed (the same batches at every
    evaluation, so successive evaluations differ only because the model changed).

    With several processes, `shard=(rank, world_size)` gives each its slice of every global
    batch (see `get_batch`) and `sum_across` (an in-place all-reduce sum) combines the losses:
    every rank returns what one process evaluating batches of `batch_size * world_size` would
    (packed conversations: each global batch's mean over its targets, however the ranks' slices
    share them).
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    masked = sum_across is not None and isinstance(tokens, PackedRows)
    losses = torch.zeros(iters)
    targets = torch.zeros(iters)  # each slice's targets: the ranks' counts differ
    for i in range(iters):
        x, y = get_batch(tokens, batch_size, block_size, generator, device, shard=shard)
        with autocast():
            logits = model(x)
        losses[i] = lm_loss(logits, y, reduction="sum" if masked else "mean").item()
        if masked:
            targets[i] = int((y != IGNORE).sum())
    if masked:
        assert sum_across is not None
        sum_across(losses)
        sum_across(targets)
        losses /= targets.clamp(min=1)
    elif sum_across is not None:
        sum_across(losses)
        losses /= shard[1]
    model.train(was_training)
    return float(losses.mean())


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean cross-entropy per token, in nats
    perplexity: float  # exp(loss)
    bits_per_byte: float | None  # total bits / UTF-8 bytes of the text
    tokens: int
    # What was scored, for the report: the checkpoint (folder and step) and the text.
    checkpoint: str = ""
    step: int | None = None
    scored: str = ""

    def to_dict(self) -> dict[str, float | int | str | None]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line: what was scored, then the figures."""
        bpb = f" | bits/byte {self.bits_per_byte:.4f}" if self.bits_per_byte else ""
        step = f" (step {self.step})" if self.step is not None else ""
        what = f"{self.checkpoint}{step} on {self.scored}: " if self.checkpoint else ""
        return (f"{what}loss {self.loss:.4f} | perplexity {self.perplexity:.3f}{bpb} | "
                f"{self.tokens:,} tokens")


@torch.no_grad()
def evaluate_tokens(model: GPT, tokens: Tokens, *, num_bytes: int | None = None,
                    batch_size: int = 16, autocast: AutocastFactory = contextlib.nullcontext
                    ) -> EvalResult:
    """Loss over a whole sequence of token ids, in non-overlapping windows of block_size, so
    every token is predicted once (each window's first with no context).

    Args:
        tokens: 1-D array of ids, at least 2 long.
        num_bytes: UTF-8 size of the text the tokens came from, for bits per byte.
        batch_size: windows per forward pass.
    """
    model.eval()
    device = next(model.parameters()).device
    T = model.config.block_size
    data = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    n_windows = math.ceil((len(data) - 1) / T)
    total_nats, total_tokens = 0.0, 0
    for first in range(0, n_windows, batch_size):
        xs, ys = [], []
        for w in range(first, min(first + batch_size, n_windows)):
            start = w * T
            end = min(start + T, len(data) - 1)
            xs.append(data[start:end])
            ys.append(data[start + 1 : end + 1])
        # The last window may be short: evaluate it on its own rather than padding.
        if len({len(x) for x in xs}) == 1:
            pairs = [(torch.stack(xs), torch.stack(ys))]
        else:
            pairs = [(x[None], y[None]) for x, y in zip(xs, ys, strict=True)]
        for x, y in pairs:
            with autocast():
                logits = model(x.to(device))
            n = y.numel()
            total_nats += lm_loss(logits, y.to(device)).item() * n
            total_tokens += n
    loss = total_nats / total_tokens
    bpb = total_nats / (math.log(2) * num_bytes) if num_bytes else None
    return EvalResult(loss, math.exp(loss), bpb, total_tokens)


def evaluate(ckpt: str | Path, data: str | Path | None = None, *, batch_size: int = 16,
             device: str = "auto", dtype: str = "float32", quantize: str = "none") -> EvalResult:
    """Loss, perplexity and bits per byte of a checkpoint on its own val split, or on a text
    file / prepared directory given as `data`; `quantize="int8"` measures the model with its
    Linear weights in int8 (what it costs in loss)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size ({batch_size!r}) must be a positive whole number; try "
                        "--batch-size 16")
    check_quantize(quantize, device, dtype)
    loaded = load_model(ckpt, device, dtype="float32", quantize=quantize)
    model, tokenizer, checkpoint = loaded.model, loaded.tokenizer, loaded.checkpoint
    precision = choose_precision(dtype, next(model.parameters()).device, model.config.n_embd)
    meta = checkpoint.meta if checkpoint is not None else {}
    if data is None or is_prepared_dir(data):
        data_dir = data if data is not None else meta.get("data_dir", "")
        if not is_prepared_dir(data_dir):
            raise UserError(f"the checkpoint's data directory '{data_dir}' is gone; "
                            "pass a text file with --data")
        prepared = load_prepared(data_dir)
        if prepared.tokenizer.fingerprint() != tokenizer.fingerprint():
            raise UserError(f"'{data_dir}' was prepared with another tokenizer than the "
                            "checkpoint's; pass a raw text file with --data instead")
        tokens: Tokens = prepared.val_tokens()
        num_bytes = int(prepared.meta["val_bytes"])
        scored = f"the val split of {data_dir}"
    else:
        text, description = read_text_source(str(data))
        tokens = tokenizer.encode_array(text)
        num_bytes = len(text.encode("utf-8"))
        scored = description
    if len(tokens) < 2:
        raise UserError("the evaluation text has fewer than 2 tokens; give a longer text")
    result = evaluate_tokens(model, tokens, num_bytes=num_bytes, batch_size=batch_size,
                             autocast=precision.autocast)
    return dataclasses.replace(result, checkpoint=str(checkpoint.path if checkpoint else ckpt),
                               step=meta.get("step"), scored=scored)
