"""Generated text, piece by piece: decoding, stop rules and streaming for a batch of prompts.

`stream_batch` runs a `Decoder` over several prompts at once and yields `Chunk`s of text per
row as soon as they are safe to show: it holds back an incomplete UTF-8 character (a byte-level
BPE token can end mid-character), the start of a possible stop string, and an unfinished line
that may be the next speaker's heading. A row that meets a stop rule leaves the batch, and its
stop text is never emitted. `stream_text` is the one-prompt version. The CLI, the Python API
and the HTTP server all generate text through these two functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from gptscratch.errors import UserError
from gptscratch.model.generation import Decoder
from gptscratch.model.gpt import GPT
from gptscratch.model.sampling import SamplingConfig


class TextCodec(Protocol):
    """What generation needs from a tokenizer (see `gptscratch.data.tokenizers`)."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class StopRule(Protocol):
    """Decides where generated text ends. `find(text)` -> (cut, safe): `cut` is the length of
    the text to keep if it has ended (else None); `safe` how many characters can be shown now."""

    def find(self, text: str) -> tuple[int | None, int]: ...


class StopStrings:
    """End at the first of some strings; the string itself is not part of the output."""

    def __init__(self, stops: Sequence[str]) -> None:
        if any(s == "" for s in stops):
            raise UserError("a stop string is empty; give a non-empty --stop text")
        self.stops = list(stops)

    def find(self, text: str) -> tuple[int | None, int]:
        hits = [p for p in (text.find(s) for s in self.stops) if p >= 0]
        if hits:
            return min(hits), min(hits)
        # Hold back a tail that might be the beginning of a stop string.
        held = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    held = max(held, n)
                    break
        return None, len(text) - held


@dataclass
class Completion:
    """One finished generation.

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


def apply_rules(text: str, rules: Sequence[StopRule]) -> tuple[int | None, int]:
    """Combine stop rules: the earliest cut wins, and only what every rule deems safe shows."""
    cut: int | None = None
    safe = len(text.rstrip("\ufffd"))  # never show half a character
    for rule in rules:
        c, s = rule.find(text)
        safe = min(safe, s)
        if c is not None:
            cut = c if cut is None else min(cut, c)
    return cut, safe


def encode_prompt(tokenizer: TextCodec, prompt: str) -> list[int]:
    ids = tokenizer.encode(prompt)
    if not ids:
        raise UserError("the prompt is empty and the tokenizer has no start token; give --prompt")
    return ids


def stream_batch(
    model: GPT,
    tokenizer: TextCodec,
    prompts: Sequence[str],
    max_new_tokens: int,
    sampling: SamplingConfig,
    *,
    rules: Sequence[StopRule] = (),
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[Chunk]:
    """Generate a continuation of every prompt in one batch, yielding text as it comes.

    Every row ends with exactly one Chunk carrying its `Completion`.
    """
    if max_new_tokens < 0:
        raise UserError(f"max_new_tokens ({max_new_tokens}) must be >= 0")
    done = [Completion(prompt=p) for p in prompts]
    decoder = Decoder(model, [encode_prompt(tokenizer, p) for p in prompts], use_cache=use_cache)
    emitted = [0] * len(prompts)  # characters of each row's text already yielded
    for _ in range(max_new_tokens):
        step = decoder.step(sampling, generator)
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


def stream_text(
    model: GPT,
    tokenizer: TextCodec,
    prompt: str,
    max_new_tokens: int,
    sampling: SamplingConfig,
    *,
    stop: Sequence[str] = (),
    rules: Sequence[StopRule] = (),
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[str]:
    """Yield pieces of one prompt's continuation (the prompt itself is not repeated).

    Generation ends after `max_new_tokens` tokens, at the first stop string (not emitted) or
    when another stop rule says so. Joining the pieces gives the whole continuation.
    """
    all_rules = [*rules, StopStrings(stop)] if stop else list(rules)
    for chunk in stream_batch(model, tokenizer, [prompt], max_new_tokens, sampling,
                              rules=all_rules, generator=generator, use_cache=use_cache):
        if chunk.text:
            yield chunk.text
