"""The Python API's own functions for checkpoints: evaluate one, fold a LoRA run's adapters."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from gptscratch.checkpoints.convert import merge_checkpoint
from gptscratch.checkpoints.load import load_model
from gptscratch.data.sources import read_text_source
from gptscratch.data.token_files import is_prepared_dir, load_prepared
from gptscratch.errors import UserError
from gptscratch.evaluation.evaluate import EvalResult, Tokens, evaluate_tokens
from gptscratch.runtime.cpu import set_cpu_float_mode
from gptscratch.runtime.precision import choose_precision

log = logging.getLogger("gptscratch.api")


def merge_lora(ckpt: str | Path, out_dir: str | Path) -> Path:
    """Fold a LoRA run's adapters into its base model and write a plain checkpoint to
    `out_dir` (a new or empty folder); `export_hf` takes it. Returns `out_dir`."""
    set_cpu_float_mode()
    out = merge_checkpoint(ckpt, out_dir)
    log.info("merged the adapters of %s into %s", ckpt, out)
    return out


def evaluate(ckpt: str | Path, data: str | Path | None = None, *, batch_size: int = 16,
             device: str = "auto", dtype: str = "float32") -> EvalResult:
    """Loss, perplexity and bits per byte of a checkpoint on its own val split, or on a text
    file / prepared directory given as `data`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size ({batch_size!r}) must be a positive whole number; try "
                        "--batch-size 16")
    loaded = load_model(ckpt, device, dtype="float32")
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
