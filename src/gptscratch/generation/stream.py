"""Generated text, piece by piece: the two entry points of text generation.

`stream_chunks` continues one or more prompts in one batch and yields `Chunk`s of each
sample's text as soon as they are safe to show (`stops.py` says what is held back);
`complete` returns the finished `Completion`s. Both check everything before the first token
(the config when it was built; here the prompts, the speaker, the tokenizer's coverage of the
prompts and the memory a batch needs), so a mistake never ends a half-printed text. Each
prompt is encoded once. Sampling runs one `model.decoding.Decoder` over all rows, finished
rows leaving the batch; beam search (`model.beam_search`) runs prompt by prompt. The CLI,
the Python API, chat sessions and the notebooks all generate through these two functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from gptscratch.checkpoints.load import LoadedModel
from gptscratch.data.tokenizers import Tokenizer
from gptscratch.errors import UserError, require
from gptscratch.generation.config import GenerationConfig
from gptscratch.generation.script import (
    NextSpeakerStop,
    ScriptFormat,
    corpus_script,
    speaker_prompts,
)
from gptscratch.generation.stops import StopRule, StopStrings, apply_rules
from gptscratch.model.beam_search import beam_search
from gptscratch.model.decoding import Decoder, generation_bytes
from gptscratch.model.gpt import GPT
from gptscratch.runtime.device import available_memory


@dataclass
class Completion:
    """One finished generation.

    prompt: the text the model continued (with script mode's speaker heading).
    text: the continuation (the prompt is not repeated; a stop string is not included).
    token_ids / logprobs: every generated token and its log-probability under the model
        (tokens after a stop cut are included: they were generated).
    finish_reason: "length" (max_new_tokens reached) or "stop" (a stop rule ended it).
    score: the beam search score (length-normalised log-probability); None when sampled.
    """

    prompt: str
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"
    score: float | None = None


@dataclass
class Chunk:
    """A piece of one row's text; `completion` is set on the row's last chunk."""

    row: int
    text: str
    completion: Completion | None = None


class Generation:
    """The chunks of one `stream_chunks` call, and the prompts as the model continues them
    (`prompts[i]` is prompt i with script mode's speaker heading)."""

    def __init__(self, prompts: list[str], chunks: Iterator[Chunk]) -> None:
        self.prompts = prompts
        self._chunks = chunks

    def __iter__(self) -> Iterator[Chunk]:
        return self._chunks


def stream_chunks(loaded: LoadedModel, prompts: str | Sequence[str],
                  config: GenerationConfig, script: ScriptFormat | None = None) -> Generation:
    """Generate continuations of one or more prompts, yielding text chunks as they come.

    Row i * num_samples + j is sample j of prompt i. Each row ends with one chunk carrying its
    `Completion` (text, token ids, per-token log-probabilities, finish reason).

    Args:
        loaded: the model and tokenizer (`checkpoints.load.load_model`).
        prompts: one prompt or several (of any lengths: they share one batch).
        config: how to generate.
        script: the corpus's speakers for script mode (default: found from the checkpoint's
            training data when script mode needs them).

    Raises:
        UserError: an empty prompt, an unknown speaker, a prompt the tokenizer cannot encode,
            or a batch that does not fit in memory.
    """
    if config.needs_script and script is None:
        script = corpus_script(loaded.checkpoint)
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    require(len(texts) > 0 and all(p != "" for p in texts),
            "a prompt is empty; give --prompt TEXT or pipe text on stdin")
    texts = speaker_prompts(texts, config.speaker, script)
    ids = [encode_prompt(loaded.tokenizer, text) for text in texts]
    rules = _stop_rules(config, script)
    rows = config.beams if config.uses_beams else len(texts) * config.num_samples
    check_batch_fits(loaded.model, rows, config.use_cache)
    run = _beam_chunks if config.uses_beams else _sampled_chunks
    return Generation(texts, run(loaded.model, loaded.tokenizer, texts, ids, config, rules))


def complete(loaded: LoadedModel, prompts: str | Sequence[str],
             config: GenerationConfig) -> list[Completion]:
    """Generate for one or more prompts in one batch and return every `Completion` (text,
    token ids, per-token log-probabilities, finish reason; the score with beams), row i *
    num_samples + j being sample j of prompt i."""
    done: dict[int, Completion] = {}
    for chunk in stream_chunks(loaded, prompts, config):
        if chunk.completion is not None:
            done[chunk.row] = chunk.completion
    return [done[i] for i in sorted(done)]


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    ids = tokenizer.encode(prompt)
    if not ids:
        raise UserError("the prompt is empty and the tokenizer has no start token; give --prompt")
    return ids


def check_batch_fits(model: GPT, batch: int, use_cache: bool = True) -> None:
    """Refuse a batch whose KV cache and logits would not fit in free memory."""
    need = generation_bytes(model, batch, use_cache)
    free = available_memory(model.transformer.wte.weight.device)
    if free is not None and need > 0.8 * free:
        per_row = generation_bytes(model, 1, use_cache)
        raise UserError(f"{batch:,} samples need about {need / 2**30:.1f} GiB for generation but "
                        f"only {free / 2**30:.1f} GiB is free; use at most "
                        f"{max(1, int(0.8 * free // per_row)):,} (--num-samples)")


def _stop_rules(config: GenerationConfig, script: ScriptFormat | None) -> list[StopRule]:
    rules: list[StopRule] = [StopStrings(config.stop)] if config.stop else []
    if config.until_next_speaker:
        rules.append(NextSpeakerStop(script))
    return rules


def _sampled_chunks(model: GPT, tokenizer: Tokenizer, texts: list[str], ids: list[list[int]],
                    config: GenerationConfig, rules: list[StopRule]) -> Iterator[Chunk]:
    """Sample every row in one batch; a row that meets a stop rule leaves the batch."""
    n = config.num_samples
    done = [Completion(prompt=text) for text in texts for _ in range(n)]
    generator = torch.Generator(device=model.transformer.wte.weight.device)
    if config.seed is not None:
        generator.manual_seed(config.seed)
    else:
        generator.seed()
    decoder = Decoder(model, [row for row in ids for _ in range(n)], use_cache=config.use_cache)
    emitted = [0] * len(done)  # characters of each row's text already yielded
    for _ in range(config.max_new_tokens):
        step = decoder.step(config.sampling, generator)
        keep = []
        for i, (row, token, logprob) in enumerate(
                zip(step.rows.tolist(), step.ids.tolist(), step.logprobs.tolist(), strict=True)):
            out = done[row]
            out.token_ids.append(token)
            out.logprobs.append(logprob)
            text = tokenizer.decode(out.token_ids)
            cut, safe = apply_rules(text, rules)
            if cut is not None:
                out.text, out.finish_reason = text[:cut], "stop"
                yield Chunk(row, text[emitted[row]:cut], out)
                continue
            keep.append(i)
            if safe > emitted[row]:
                yield Chunk(row, text[emitted[row]:safe])
                emitted[row] = safe
        if not keep:
            return
        if len(keep) < decoder.batch:  # finished rows leave the batch
            decoder.keep(torch.tensor(keep, device=step.ids.device))
    for row in decoder.rows.tolist():
        out = done[row]
        out.text = tokenizer.decode(out.token_ids)
        yield Chunk(row, out.text[emitted[row]:], out)


def _beam_chunks(model: GPT, tokenizer: Tokenizer, texts: list[str], ids: list[list[int]],
                 config: GenerationConfig, rules: list[StopRule]) -> Iterator[Chunk]:
    """Beam search, prompt by prompt: the best `num_samples` hypotheses of each, whole."""

    def ended(new_ids: list[int]) -> bool:
        return apply_rules(tokenizer.decode(new_ids), rules)[0] is not None

    for i, (text, prompt_ids) in enumerate(zip(texts, ids, strict=True)):
        hypotheses = beam_search(model, prompt_ids, config.max_new_tokens, config.beam,
                                 is_finished=ended if rules else None, sampling=config.sampling,
                                 use_cache=config.use_cache)
        for j, h in enumerate(hypotheses[:config.num_samples]):
            out = tokenizer.decode(h.ids)
            cut = apply_rules(out, rules)[0] if rules else None
            completion = Completion(text, out if cut is None else out[:cut], h.ids, [],
                                    "stop" if h.finished else "length", h.score)
            yield Chunk(i * config.num_samples + j, completion.text, completion)
