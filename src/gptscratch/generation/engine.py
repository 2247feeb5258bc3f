"""The decoding engine, which every caller decodes through (`stream_chunks` / `complete`, so
`sample`, `chat` and the API; training samples; the server, which adds a thread and a queue).

Each row keeps its own sampling settings, seeded generator, penalty history, window and stop
rules, and joins or leaves a running batch at any step (continuous batching): a row with seed s
gives what its prompt alone with seed s gives (logits to ~5e-7 in fp32: a padded batch takes
the masked attention kernel). What a row's stop rules let show goes to its sink as `RowEvent`s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.errors import UserError
from gptscratch.model.config import SamplingConfig
from gptscratch.model.decoding import Decoder, generation_bytes, window_keep
from gptscratch.model.gpt import GPT
from gptscratch.model.sampling import TokenCounts, sample_next_token
from gptscratch.runtime.device import available_memory

log = logging.getLogger("gptscratch")

MOST_ROWS = 64  # the default batch's ceiling: beyond it a 2-core CPU gains no throughput


class StopRule(Protocol):
    """Decides where generated text ends. `find(text)` -> (cut, safe): `cut` is the length of
    the text to keep if it has ended (else None); `safe` how many characters can be shown now."""

    def find(self, text: str) -> tuple[int | None, int]: ...


class StopStrings:
    """End at the first of some (non-empty) strings; the string itself is not output."""

    def __init__(self, stops: Sequence[str]) -> None:
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


def apply_rules(text: str, rules: Sequence[StopRule]) -> tuple[int | None, int]:
    """Combine stop rules: the earliest cut wins, and only what every rule deems safe shows,
    never half a UTF-8 character (a byte-level BPE token can end mid-character: U+FFFD)."""
    cut: int | None = None
    safe = len(text.rstrip("\ufffd"))
    for rule in rules:
        c, s = rule.find(text)
        safe = min(safe, s)
        if c is not None:
            cut = c if cut is None else min(cut, c)
    return cut, safe


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
    """One sequence to generate, from at least one prompt id. `seed` None seeds at random;
    `top_logprobs` N >= 0 reports each token's log-probability and N best alternatives (None:
    no per-token reports); `score_prompt` first reports the prompt's tokens with theirs
    (OpenAI's echo with logprobs, which evaluation harnesses use to score text)."""

    prompt_ids: tuple[int, ...]
    max_tokens: int
    sampling: SamplingConfig
    seed: int | None = None
    rules: tuple[StopRule, ...] = ()
    top_logprobs: int | None = None
    score_prompt: bool = False


Sink = Callable[[RowEvent], None]


def rows_for(prompts: Sequence[Sequence[int]], n: int, max_tokens: int,
             sampling: SamplingConfig, seed: int | None, rules: Sequence[StopRule] = (),
             top_logprobs: int | None = None, score_prompt: bool = False) -> list[RowRequest]:
    """Row i * n + j is sample j of prompt i, seeded with seed + j: `sample`'s samples and the
    server's choices alike, each reading as it would alone with its seed."""
    return [RowRequest(tuple(ids), max_tokens, sampling, None if seed is None else seed + j,
                       tuple(rules), top_logprobs, score_prompt)
            for ids in prompts for j in range(n)]


class Row:
    """A row while it waits or runs: its tokens, window, generator, history and text."""

    def __init__(self, request: RowRequest, sink: Sink) -> None:
        self.request = request
        self.sink = sink
        self.context = list(request.prompt_ids)  # prompt, then generated tokens
        self.generated: list[int] = []
        self.logprobs: list[float] = []  # each generated token's, under the model
        self.start = 0  # where the row's window begins in `context`
        self.text = ""  # the generated text so far (up to the stop, once it has ended)
        self.emitted = 0  # characters of it already reported
        self.pending: list[TokenInfo] = []  # tokens whose text is not reported yet
        self.offsets: list[int] = []  # where each generated token's text begins
        self.finish_reason: str | None = None
        self.cancelled = False
        self.generator: torch.Generator | None = None
        self.history: TokenCounts | None = None

    def begin(self, device: torch.device, vocab_size: int, block_size: int) -> None:
        """Set up the row's torch state when it joins; its window is the last block_size
        prompt tokens, as `Decoder` takes for a prompt decoded alone."""
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


def default_max_batch(model: GPT) -> int:
    """Rows decoded together when the user does not say: MOST_ROWS, or as many as a quarter
    of the free memory holds (each row's KV cache and logits, `generation_bytes`). Few rows
    make requests queue: with 16 rows and 64 clients the char model's time to first token
    reached 4.3 s at p95, against 0.5 s with 64 (docs/benchmarks.md, "Serving")."""
    free = available_memory(model.transformer.wte.weight.device)
    if free is None:
        return 8
    return max(1, min(MOST_ROWS, free // 4 // generation_bytes(model, 1)))


def check_rows_fit(model: GPT, rows: int, use_cache: bool = True) -> None:
    """Refuse a batch whose KV cache and logits would not fit in free memory."""
    need = generation_bytes(model, rows, use_cache)
    free = available_memory(model.transformer.wte.weight.device)
    if free is not None and need > 0.8 * free:
        per_row = generation_bytes(model, 1, use_cache)
        raise UserError(f"{rows:,} samples need about {need / 2**30:.1f} GiB for generation but "
                        f"only {free / 2**30:.1f} GiB is free; use at most "
                        f"{max(1, int(0.8 * free // per_row)):,} (num_samples)")


class Engine:
    """Decodes its running rows together, one token each per `step`; `model` in eval mode,
    run only by the engine's caller. `use_cache=False` (for learning, and as an oracle)
    re-reads each row's window every step."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, use_cache: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.use_cache = use_cache
        self.block_size = model.config.block_size
        self.device = model.transformer.wte.weight.device
        self.running: list[Row] = []
        self.decoder: Decoder | None = None
        self.largest_batch = 0  # the most rows one step decoded (for tests and logs)

    def join(self, rows: Sequence[Row]) -> None:
        """Rows join, decoded from the next step on; one asked to score its prompt reports it."""
        for row in rows:
            row.begin(self.device, self.model.config.vocab_size, self.block_size)
            if row.request.score_prompt:
                row.send(RowEvent("", prompt_tokens=self._score(row)))
            if row.request.max_tokens > 0:
                self.running.append(row)
            else:
                self._finish(row, "", [], "length")

    def run_to_end(self, rows: Sequence[Row]) -> None:
        """Decode `rows` (and any already running) to their ends."""
        self.join(rows)
        while self.running:
            self.step()

    def leave(self, gone: Sequence[int]) -> None:
        """Drop rows (indices into `running`) from the batch and from the decoder's cache."""
        if not gone:
            return
        held, gone_set = self._in_decoder(), set(gone)
        keep = [i for i in range(len(self.running)) if i not in gone_set]
        self.running = [self.running[i] for i in keep]
        inside = [i for i in keep if i < held]
        if self.decoder is None or len(inside) == held:
            return
        if not inside:
            self.decoder = None
            return
        self.decoder.keep(torch.tensor(inside, device=self.device))
        self.decoder.drop_common_padding()

    def fail(self, error: str) -> None:
        """End every running row with an error (a bug or an out-of-memory in a step)."""
        for row in self.running:
            row.send(RowEvent("", finish_reason="error", error=error))
        self.running, self.decoder = [], None

    @torch.inference_mode()
    def step(self) -> None:
        """One token for every running row; rows that end leave the batch."""
        decoder = self._prepare()
        self.largest_batch = max(self.largest_batch, decoder.batch)
        logits = decoder.logits()  # (B, V) fp32
        logprobs = F.log_softmax(logits, dim=-1)  # (B, V)
        ids = self._sample(logits)  # (B, 1)
        decoder.append(ids)
        finished = []
        chosen = zip(ids[:, 0].tolist(), logprobs.gather(1, ids)[:, 0].tolist(), strict=True)
        for i, (row, (token, logprob)) in enumerate(zip(self.running, chosen, strict=True)):
            if row.history is not None:
                row.history.add(ids[i:i + 1])
            if self._advance(row, token, logprob, logprobs[i]):
                finished.append(i)
        self.leave(finished)

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        """One token per row, (B, 1), each drawn with the row's own generator (rows sharing
        their settings, without penalties, are filtered as one batch)."""
        rows, first = self.running, self.running[0].request.sampling
        if all(r.request.sampling == first and r.history is None for r in rows):
            return sample_next_token(logits, first, [r.generator for r in rows])  # type: ignore[misc]
        return torch.cat([sample_next_token(logits[i:i + 1], r.request.sampling, r.generator,
                                            r.history) for i, r in enumerate(rows)])

    def _in_decoder(self) -> int:
        return self.decoder.batch if self.decoder is not None else 0

    def _prepare(self) -> Decoder:
        """Bring the decoder up to date: rows that joined, or whose window slid, are prefilled
        on their own and merged in (`Decoder.add`); rows already running are not recomputed."""
        if not self.use_cache:  # every step re-reads each row's last block_size tokens
            return Decoder(self.model, [r.context[-self.block_size:] for r in self.running],
                           use_cache=False)
        held = self._in_decoder()
        redo = [i for i, row in enumerate(self.running)
                if i >= held or row.slide_if_full(self.block_size)]
        if self.decoder is None or len(redo) == len(self.running):
            self.decoder = Decoder(self.model, [r.window() for r in self.running])
            return self.decoder
        if not redo:
            return self.decoder
        stay = [i for i in range(len(self.running)) if i not in set(redo)]
        if len(stay) < held:  # rows that slid leave the cache, to be prefilled again
            self.decoder.keep(torch.tensor(stay, device=self.device))
            self.decoder.drop_common_padding()
        self.running = [self.running[i] for i in stay] + [self.running[i] for i in redo]
        self.decoder.add([row.window() for row in self.running[len(stay):]])
        return self.decoder

    @torch.inference_mode()
    def _score(self, row: Row) -> tuple[TokenInfo, ...]:
        """The prompt's tokens with their log-probabilities, each given the tokens before it:
        one forward pass per window, and past block_size, windows half a window apart so
        every token is scored with at least half a window of context."""
        ids, half = row.request.prompt_ids, max(1, self.block_size // 2)
        infos = [TokenInfo(ids[0], self.tokenizer.decode([ids[0]]), None)]
        scored = 1
        while scored < len(ids):
            end = min(len(ids), max(self.block_size, scored + half))
            begin = max(0, end - self.block_size)
            window = torch.tensor([ids[begin:end]], device=self.device)  # (1, W)
            logprobs = F.log_softmax(self.model(window)[0].float(), dim=-1)  # (W, V)
            infos += [self._token_info(row, ids[i], logprobs[i - 1 - begin])
                      for i in range(scored, end)]
            scored = end
        return tuple(infos)

    def _token_info(self, row: Row, token: int, logprobs: torch.Tensor) -> TokenInfo:
        top: tuple[tuple[str, float], ...] = ()
        n = row.request.top_logprobs or 0
        if n > 0:
            values, indices = torch.topk(logprobs, min(n, logprobs.size(-1)))
            top = tuple((self.tokenizer.decode([t]), v) for t, v in
                        zip(indices.tolist(), values.tolist(), strict=True))
        return TokenInfo(token, self.tokenizer.decode([token]), float(logprobs[token]), top)

    def _advance(self, row: Row, token: int, logprob: float, logprobs: torch.Tensor) -> bool:
        """Add a sampled token (and its log-probability; `logprobs`: the row's (V,)) to its row
        and report what became safe; True when it ended."""
        row.offsets.append(len(row.text))
        row.context.append(token)
        row.generated.append(token)
        row.logprobs.append(logprob)
        if row.request.top_logprobs is not None:
            row.pending.append(self._token_info(row, token, logprobs))
        text = row.text = self.tokenizer.decode(row.generated)
        cut, safe = apply_rules(text, row.request.rules)
        if cut is not None:  # keep the tokens whose text begins before the cut
            starts = row.offsets[len(row.offsets) - len(row.pending):]
            shown = [t for t, at in zip(row.pending, starts, strict=True) if at < cut]
            row.text = text[:cut]
            self._finish(row, text[row.emitted:cut], shown, "stop")
            return True
        if len(row.generated) >= row.request.max_tokens:
            self._finish(row, text[row.emitted:], row.pending, "length")
            return True
        if safe > row.emitted:
            row.send(RowEvent(text[row.emitted:safe], tuple(row.pending)))
            row.emitted, row.pending = safe, []
        return False

    def _finish(self, row: Row, text: str, tokens: list[TokenInfo], reason: str) -> None:
        row.finish_reason = reason
        row.send(RowEvent(text, tuple(tokens), reason, len(row.generated)))
