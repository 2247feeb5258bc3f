"""A row of the batching engine: what a request asks for, what it reports, and its state.

`RowRequest` is one sequence to generate; `RowEvent` is what the engine reports back for it
(newly safe text, the tokens behind it, the finish reason); `Row` is the row's own state while
it waits or runs: its tokens, its context window, its generator and its penalty history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gptscratch.generation.stops import StopRule
from gptscratch.model.decoding import window_keep
from gptscratch.model.sampling import SamplingConfig, TokenCounts

log = logging.getLogger("gptscratch")

@dataclass(frozen=True)
class TokenInfo:
    """One token: its id, its text, its log-probability under the model (before temperature,
    penalties and filters; None for a prompt's first token, which has no context) and the
    most likely alternatives, best first."""

    id: int
    text: str
    logprob: float | None
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class RowEvent:
    """What a row reports: newly safe text, the tokens behind it, and on its last event the
    finish reason ("stop", "length", or "error" with `error` set) and its token count. A row
    asked to score its prompt first reports its prompt's tokens (`prompt_tokens`) alone."""

    text: str
    tokens: tuple[TokenInfo, ...] = ()
    finish_reason: str | None = None
    completion_tokens: int = 0
    error: str | None = None
    prompt_tokens: tuple[TokenInfo, ...] = ()


@dataclass(frozen=True)
class RowRequest:
    """One sequence to generate.

    prompt_ids: the prompt's token ids (at least one).
    max_tokens: tokens to generate at most (0: none).
    seed: seeds the row's own generator (None: a random seed).
    rules: stop rules (`generation.stops`); the text they cut is never reported.
    top_logprobs: None for no log-probabilities; N >= 0 for each token's log-probability and
        its N most likely alternatives.
    score_prompt: also report the prompt's tokens with their log-probabilities (and
        top_logprobs alternatives), before generating: OpenAI's echo with logprobs, which
        evaluation harnesses use to score text (often with max_tokens 0).
    """

    prompt_ids: tuple[int, ...]
    max_tokens: int
    sampling: SamplingConfig
    seed: int | None = None
    rules: tuple[StopRule, ...] = ()
    top_logprobs: int | None = None
    score_prompt: bool = False


class QueueFull(Exception):
    """The waiting queue cannot take the request's rows (the server answers 429)."""


class EngineStopped(Exception):
    """The engine is not running (the server answers 503)."""


Sink = Callable[[RowEvent], None]


class Row:
    """A request's row while it waits or runs: its tokens, window, generator and history."""

    def __init__(self, request: RowRequest, sink: Sink) -> None:
        self.request = request
        self.sink = sink
        self.context = list(request.prompt_ids)  # prompt, then generated tokens
        self.generated: list[int] = []
        self.start = 0  # where the row's window begins in `context`
        self.text = ""  # the generated text so far
        self.emitted = 0  # characters of it already reported
        self.pending: list[TokenInfo] = []  # tokens whose text is not reported yet
        self.offsets: list[int] = []  # where each generated token's text begins
        self.cancelled = False
        self.generator: torch.Generator | None = None
        self.history: TokenCounts | None = None

    def begin(self, device: torch.device, vocab_size: int, block_size: int) -> None:
        """Set up the row's torch state, on the engine's thread, when it joins the batch."""
        self.generator = torch.Generator(device=device)
        if self.request.seed is not None:
            self.generator.manual_seed(self.request.seed)
        else:
            self.generator.seed()
        if self.request.sampling.uses_penalties:
            self.history = TokenCounts([self.context], vocab_size, device)
        self.start = max(0, len(self.context) - block_size)

    def slide_if_full(self, block_size: int) -> bool:
        """Slide the window as `Decoder` does for a lone row whose cache is full (it holds
        every context token but the newest); True if it slid."""
        if len(self.context) - 1 - self.start < block_size:
            return False
        self.start = len(self.context) - window_keep(block_size)
        return True

    def window(self) -> list[int]:
        return self.context[self.start:]

    def send(self, event: RowEvent) -> None:
        try:
            self.sink(event)
        except Exception:  # a closed event loop must not stop the engine
            log.debug("a row's event was not delivered", exc_info=True)


