"""The batching engine: one thread owns the model and decodes every request's rows together.

Requests arrive as rows (`RowRequest`: prompt ids, length, sampling settings, seed, stop
rules) into a bounded queue. Before every decoding step, waiting rows join the running batch
(up to `max_batch`) and finished or abandoned rows leave it: continuous batching, so a short
request never waits for a long one to end.

Each row keeps everything that shapes its text to itself: its own `SamplingConfig`, its own
seeded `torch.Generator`, its own penalty history, and its own context window. The window
follows `model.decoding.Decoder`'s rule for a prompt decoded alone (the last block_size
prompt tokens, then a slide to the last `window_keep` tokens when the cache is full), so a
row's tokens do not depend on which other rows share its batch. A row that joins, or whose
window slides, is prefilled on its own and its cache rows are merged into the batch's
(`Decoder.add`); the rows already running are never computed again. Rows that leave are
dropped from the cache in place. A row sampled with seed s therefore gives what
`generation.stream.complete` gives for the same prompt and seed s. (Its logits agree to about
5e-7 in fp32, not bit for bit: in a padded batch a row goes through the masked attention
kernel, and its newest prompt token is fed in the batch's step, not in its prefill.)

The engine knows token ids and text, not HTTP: each row reports `RowEvent`s to a callback (the
server turns them into response chunks).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.generation.stops import apply_rules
from gptscratch.model.decoding import Decoder, generation_bytes
from gptscratch.model.gpt import GPT
from gptscratch.model.sampling import sample_next_token
from gptscratch.runtime.device import available_memory
from gptscratch.server.rows import (
    EngineStopped,
    QueueFull,
    Row,
    RowEvent,
    RowRequest,
    Sink,
    TokenInfo,
)

log = logging.getLogger("gptscratch")


MOST_ROWS = 64  # the default batch's ceiling: beyond it a 2-core CPU gains no throughput


def default_max_batch(model: GPT) -> int:
    """Rows decoded together when the user does not say: MOST_ROWS, or as many as a quarter
    of the free memory holds (each row's KV cache and logits, `generation_bytes`). Few rows
    make requests queue: with 16 rows and 64 clients the char model's time to first token
    reached 4.3 s at p95, against 0.5 s with 64 (docs/benchmarks.md, "Serving")."""
    free = available_memory(model.transformer.wte.weight.device)
    if free is None:
        return 8
    return max(1, min(MOST_ROWS, free // 4 // generation_bytes(model, 1)))


class Engine:
    """Decodes the rows of every request in one batch, on a thread of its own.

    Args:
        model: the GPT, in eval mode (only this engine's thread runs it).
        tokenizer: turns each row's ids into text for its stop rules and events.
        max_batch: the most rows decoded together.
        max_queue: the most rows waiting to join; beyond it `submit` raises `QueueFull`.
    """

    def __init__(self, model: GPT, tokenizer: Tokenizer, max_batch: int = 8,
                 max_queue: int = 64) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.block_size = model.config.block_size
        self.device = model.transformer.wte.weight.device
        self._waiting: deque[Row] = deque()
        self._running: list[Row] = []
        self._decoder: Decoder | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.largest_batch = 0  # the most rows one step decoded (for tests and logs)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gptscratch-engine",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the current step, then end every row with an error and stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        for row in [*self._running, *self._waiting]:
            row.send(RowEvent("", finish_reason="error", error="the server is shutting down"))
        self._running, self._waiting = [], deque()

    def submit(self, requests: Sequence[RowRequest], sinks: Sequence[Sink]) -> list[Row]:
        """Queue the rows of one request, all or none.

        Raises:
            QueueFull: fewer than len(requests) places are free in the queue.
            EngineStopped: the engine is not running.
        """
        rows = [Row(r, s) for r, s in zip(requests, sinks, strict=True)]
        with self._cond:
            if not self.alive:
                raise EngineStopped("the generation engine is not running")
            if len(self._waiting) + len(rows) > self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} waiting rows); "
                                "retry later")
            self._waiting.extend(rows)
            self._cond.notify_all()
        return rows

    def cancel(self, rows: Sequence[Row]) -> None:
        """Abandon rows (their client left): they leave the batch before the next step."""
        for row in rows:
            row.cancelled = True
        with self._cond:
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self._running:
                    self._cond.wait()
                if self._stopping:
                    return
            self.run_once()

    def run_once(self) -> None:
        """One turn of the engine: waiting rows join (a row asked to score its prompt reports
        that first), abandoned rows leave, and every running row gets one token. The engine's
        thread calls it in a loop; tests call it directly to choose what happens in each step."""
        with self._cond:
            joined = self._admit()
        try:
            for row in joined:
                if row.request.score_prompt:
                    row.send(RowEvent("", prompt_tokens=self._score(row)))
                if row.request.max_tokens == 0:
                    row.send(RowEvent("", finish_reason="length"))
            self._leave([i for i, r in enumerate(self._running) if r.cancelled])
            if self._running:
                self._step()
        except Exception as exc:  # a bug or an out-of-memory: fail these rows, go on
            log.exception("generation failed")
            for row in {id(r): r for r in [*joined, *self._running]}.values():
                row.send(RowEvent("", finish_reason="error", error=str(exc)))
            self._running, self._decoder = [], None

    def _admit(self) -> list[Row]:
        """Move waiting rows into the batch while there is room, after the rows the decoder
        holds (`self._running[:decoder.batch]`), where `_step` prefills them. Returns every row
        taken from the queue, including those asking for no tokens, which do not join."""
        taken = []
        while self._waiting and len(self._running) < self.max_batch:
            row = self._waiting.popleft()
            if row.cancelled:
                continue
            row.begin(self.device, self.model.config.vocab_size, self.block_size)
            taken.append(row)
            if row.request.max_tokens > 0:
                self._running.append(row)
        return taken

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

    def _in_decoder(self) -> int:
        return self._decoder.batch if self._decoder is not None else 0

    def _leave(self, gone: list[int]) -> None:
        """Drop rows (indices into the batch) from the batch and from the decoder's cache."""
        if not gone:
            return
        held, gone_set = self._in_decoder(), set(gone)
        keep = [i for i in range(len(self._running)) if i not in gone_set]
        self._running = [self._running[i] for i in keep]
        inside = [i for i in keep if i < held]
        if self._decoder is None or len(inside) == held:
            return
        if not inside:
            self._decoder = None
            return
        self._decoder.keep(torch.tensor(inside, device=self.device))
        self._decoder.drop_common_padding()

    def _prepare(self) -> Decoder:
        """Bring the decoder up to date with the batch: rows that joined, and rows whose window
        slid, are prefilled on their own and merged in; the others are left as they are."""
        held = self._in_decoder()
        redo = [i for i, row in enumerate(self._running)
                if i >= held or row.slide_if_full(self.block_size)]
        if self._decoder is None or len(redo) == len(self._running):
            self._decoder = Decoder(self.model, [r.window() for r in self._running])
            return self._decoder
        if not redo:
            return self._decoder
        stay = [i for i in range(len(self._running)) if i not in set(redo)]
        if len(stay) < held:  # rows that slid leave the cache, to be prefilled again
            self._decoder.keep(torch.tensor(stay, device=self.device))
            self._decoder.drop_common_padding()
        self._running = [self._running[i] for i in stay] + [self._running[i] for i in redo]
        self._decoder.add([self._running[i].window() for i in range(len(stay),
                                                                    len(self._running))])
        return self._decoder

    @torch.inference_mode()
    def _step(self) -> None:
        """One token for every running row."""
        decoder = self._prepare()
        self.largest_batch = max(self.largest_batch, decoder.batch)
        logits = decoder.logits()  # (B, V) fp32
        logprobs = F.log_softmax(logits, dim=-1)  # (B, V)
        chosen = [sample_next_token(logits[i:i + 1], row.request.sampling, row.generator,
                                    row.history) for i, row in enumerate(self._running)]
        ids = torch.cat(chosen)  # (B, 1)
        decoder.append(ids)
        finished = []
        for i, (row, token) in enumerate(zip(self._running, ids[:, 0].tolist(), strict=True)):
            if row.history is not None:
                row.history.add(chosen[i])
            if self._advance(row, token, logprobs[i]):
                finished.append(i)
        self._leave(finished)

    def _token_info(self, row: Row, token: int, logprobs: torch.Tensor) -> TokenInfo:
        top: tuple[tuple[str, float], ...] = ()
        n = row.request.top_logprobs or 0
        if n > 0:
            values, indices = torch.topk(logprobs, min(n, logprobs.size(-1)))
            top = tuple((self.tokenizer.decode([t]), v) for t, v in
                        zip(indices.tolist(), values.tolist(), strict=True))
        return TokenInfo(token, self.tokenizer.decode([token]), float(logprobs[token]), top)

    def _advance(self, row: Row, token: int, logprobs: torch.Tensor) -> bool:
        """Add a sampled token to its row and report what became safe; True when it ended."""
        row.offsets.append(len(row.text))
        row.context.append(token)
        row.generated.append(token)
        if row.request.top_logprobs is not None:
            row.pending.append(self._token_info(row, token, logprobs))
        text = row.text = self.tokenizer.decode(row.generated)
        cut, safe = apply_rules(text, row.request.rules)
        if cut is not None:  # keep the tokens whose text begins before the cut
            starts = row.offsets[len(row.offsets) - len(row.pending):]
            shown = [t for t, at in zip(row.pending, starts, strict=True) if at < cut]
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
        row.send(RowEvent(text, tuple(tokens), reason, len(row.generated)))
