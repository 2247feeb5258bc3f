"""A checkpoint, ready to generate from: the model on its device in its inference dtype, its
tokenizer, its metadata, and (for script mode, found on first use) its corpus's speakers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptscratch.checkpoints.checkpoint import Checkpoint, load_checkpoint
from gptscratch.data.tokenizers import Tokenizer
from gptscratch.generation.script import ScriptFormat, script_format
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


def load(ckpt: str | Path, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load a checkpoint (a run directory resolves to its best/) for inference.

    Args:
        ckpt: a run directory or a checkpoint directory.
        device: auto | cpu | cuda | cuda:N | mps.
        dtype: the weights' dtype: auto (bf16 where it is faster: CUDA, and CPUs with AMX for
            models at least 512 wide), float32, bfloat16 or float16 (see
            `runtime.precision.choose_precision`).

    Returns:
        The model in eval mode on the device, its tokenizer and the checkpoint's metadata.
    """
    set_cpu_float_mode()
    checkpoint = load_checkpoint(ckpt)
    target = choose_device(device)
    precision = choose_precision(dtype, target, checkpoint.model_config.n_embd,
                                 for_inference=True)
    model = checkpoint.build_model(target).to(precision.dtype)
    log.debug("generating in %s (%s)", precision.name, precision.reason)
    return LoadedModel(model, checkpoint.tokenizer(), checkpoint)


def as_loaded(source: ModelSource, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """`source` loaded (a path), or as it is (an already loaded model or pair)."""
    if isinstance(source, LoadedModel):
        return source
    if isinstance(source, tuple):
        return LoadedModel(*source)
    return load(source, device, dtype)
