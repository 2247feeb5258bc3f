"""The text sample taken at each evaluation, written to `metrics.jsonl` and the loggers as
{"step", "sample"} (`gptscratch report` shows them). It draws only from its own generator, so a
resumed run stays bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.generation.engine import Engine, Row, RowRequest
from gptscratch.model.config import SamplingConfig
from gptscratch.model.gpt import GPT

SAMPLING = SamplingConfig(temperature=0.8)  # the CLI's default, so it reads like `sample`


def start_ids(tokenizer: Tokenizer) -> list[int]:
    """Where a sample starts: the end-of-text token (a document's start), else a newline,
    else the first token of the vocabulary."""
    if tokenizer.eot_id is not None:
        return [tokenizer.eot_id]
    return tokenizer.encode("\n")[-1:] or [0]


def sample_at_step(model: GPT, tokenizer: Tokenizer, tokens: int, seed: int, step: int) -> str:
    """`tokens` tokens of text from `model`, reproducible from (`seed`, `step`), in eval mode
    and in its weights' dtype (float32 during training: a short sample is cheap)."""
    row = Row(RowRequest(tuple(start_ids(tokenizer)), tokens, SAMPLING,
                         seed=seed * 1_000_003 + step), sink=lambda event: None)
    was_training = model.training
    model.eval()
    try:
        Engine(model, tokenizer).run_to_end([row])  # the decoding engine every generator uses
    finally:
        model.train(was_training)
    return row.text
