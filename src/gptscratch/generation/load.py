"""A checkpoint, ready to generate from: the model on its device in its inference dtype, its
tokenizer, its metadata, and (for script mode, found on first use) its corpus's speakers; and
the context generation reads at once (`with_context`: longer than trained with rotary
positions).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from gptscratch.checkpoints.checkpoint import Checkpoint, load_checkpoint
from gptscratch.data.tokenizers import Tokenizer
from gptscratch.errors import require
from gptscratch.generation.script import ScriptFormat, script_format
from gptscratch.model.config import ModelConfig
from gptscratch.model.fast import use_fast_linears
from gptscratch.model.gpt import GPT
from gptscratch.runtime.cpu import set_cpu_float_mode
from gptscratch.runtime.device import choose_device
from gptscratch.runtime.precision import choose_precision

log = logging.getLogger("gptscratch")


@dataclass(frozen=True)
class LoadedModel:
    """What generation needs; unpacks as `model, tokenizer, checkpoint = load(...)`."""

    model: GPT
    tokenizer: Tokenizer
    checkpoint: Checkpoint | None = None  # None for a model built in memory
    # The training corpus's speakers, for script mode, where they are known; otherwise
    # `corpus_script` finds them from the checkpoint's corpus when script mode needs them.
    script: ScriptFormat | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.tokenizer, self.checkpoint))

    def __getitem__(self, index: int) -> Any:
        return (self.model, self.tokenizer, self.checkpoint)[index]

    def corpus_script(self) -> ScriptFormat | None:
        """The speakers of the training corpus (None: not a script, or no corpus)."""
        if self.script is not None or self.checkpoint is None:
            return self.script
        return script_format(self.checkpoint)


# What the generation functions accept: a run or checkpoint directory, or an already loaded
# model as a LoadedModel or a (model, tokenizer) pair.
ModelSource = str | Path | LoadedModel | tuple[Any, ...]


def with_context(config: ModelConfig, block_size: int | None) -> ModelConfig:
    """`config` with generation reading `block_size` tokens at once (None: as trained).

    The context is the KV cache's size and the window generation slides (model/decoding.py).
    Learned positions have one row of `wpe` per trained position, so their context can only
    shrink. Rotary positions have no table and their scores depend on distances only, so the
    context can also grow past the trained one; whether the model copes with distances it
    never saw in training is another matter (its text, or `eval` on a longer window, tells).
    """
    if block_size is None or block_size == config.block_size:
        return config
    require(isinstance(block_size, int) and block_size >= 1,
            f"block_size ({block_size}) must be >= 1; try --block-size {config.block_size}")
    require(block_size <= config.block_size or config.positions == "rope",
            f"block_size ({block_size}) is longer than the {config.block_size} positions this "
            f"model learned (its wpe table); only a model trained with --positions rope can read "
            f"a longer context; use --block-size {config.block_size} or less")
    if block_size > config.block_size:
        log.info("reading up to %d tokens at once, trained on %d (rotary positions: no table "
                 "to outgrow; distances past %d were never seen in training)", block_size,
                 config.block_size, config.block_size)
    return replace(config, block_size=block_size)


def load(ckpt: str | Path, device: str = "auto", dtype: str = "auto",
         block_size: int | None = None) -> LoadedModel:
    """Load a checkpoint (a run directory resolves to its best/) for inference.

    Args:
        ckpt: a run directory or a checkpoint directory.
        device: auto | cpu | cuda | cuda:N | mps.
        dtype: the weights' dtype: auto (bf16 where it is faster: CUDA, and CPUs with AMX for
            models at least 512 wide), float32, bfloat16 or float16 (see
            `runtime.precision.choose_precision`).
        block_size: the context generation reads at once (default: the trained one; see
            `with_context`).

    Returns:
        The model in eval mode on the device, its tokenizer and the checkpoint's metadata.
    """
    set_cpu_float_mode()
    checkpoint = load_checkpoint(ckpt)
    config = with_context(checkpoint.model_config, block_size)  # refused before the build
    target = choose_device(device)
    precision = choose_precision(dtype, target, config.n_embd, for_inference=True)
    model = checkpoint.build_model(target).to(precision.dtype)
    if precision.dtype == torch.bfloat16:
        use_fast_linears(model)
    model.config = config
    log.debug("generating in %s (%s)", precision.name, precision.reason)
    return LoadedModel(model, checkpoint.tokenizer(), checkpoint)


def as_loaded(source: ModelSource, device: str = "auto", dtype: str = "auto",
              block_size: int | None = None) -> LoadedModel:
    """`source` loaded (a path), or as it is (an already loaded model or pair), reading
    `block_size` tokens at once where given (`with_context`)."""
    if isinstance(source, str | Path):
        return load(source, device, dtype, block_size)
    loaded = source if isinstance(source, LoadedModel) else LoadedModel(*source)
    loaded.model.config = with_context(loaded.model.config, block_size)
    return loaded
