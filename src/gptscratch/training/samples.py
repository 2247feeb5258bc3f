"""The text sample taken at each evaluation: how the model writes as training goes on.

`evaluate_and_save` asks for `eval_sample_tokens` tokens from the plain model (rank 0 only),
decoded by the engine every generator uses (`generation.engine`), written to `metrics.jsonl`
and the loggers as {"step", "sample"}; `gptscratch report` shows them in order. The sample
draws only from its own generator, seeded from the run's seed and the step, so the global RNG
and the batch generator are untouched: a resumed run stays bit-identical to an uninterrupted
one, and two runs with one seed sample alike.
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
    """`tokens` tokens of text from `model`, reproducible from (`seed`, `step`).

    The model runs in eval mode (no dropout) and is put back in the mode it was in. Its
    weights' dtype is the compute dtype (float32 during training: a short sample is cheap).
    """
    row = Row(RowRequest(tuple(start_ids(tokenizer)), tokens, SAMPLING,
                         seed=seed * 1_000_003 + step), sink=lambda event: None)
    was_training = model.training
    model.eval()
    try:
        Engine(model, tokenizer).run([row])  # the decoding engine every generator uses
    finally:
        model.train(was_training)
    return row.text
