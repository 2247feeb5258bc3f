"""Continuous batching for the server: a queue and one thread in front of the decoding engine.

Requests arrive as rows (`generation.engine.RowRequest`) into a bounded queue, from any
thread. The engine's own thread owns the model: before every decoding step, waiting rows join
the running batch (up to `max_batch`) and abandoned rows leave it, so a short request never
waits for a long one to end. Everything about decoding (each row's sampling, seed, window and
stop rules) is the engine's (`generation/engine.py`); this adds only the queue, the thread
and their limits. Each row reports its `RowEvent`s to a callback, which the request's
`Job` (jobs.py) carries back to its event loop.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.generation.engine import Engine, Row, RowRequest, Sink
from gptscratch.model.gpt import GPT

log = logging.getLogger("gptscratch")


class QueueFull(Exception):
    """The waiting queue cannot take the request's rows (the server answers 429)."""


class EngineStopped(Exception):
    """The engine is not running (the server answers 503)."""


class BatchingEngine:
    """The decoding engine on a thread of its own, fed from a bounded queue.

    Args:
        model: the GPT, in eval mode (only this engine's thread runs it).
        tokenizer: turns each row's ids into text for its stop rules and events.
        max_batch: the most rows decoded together.
        max_queue: the most rows waiting to join; beyond it `submit` raises `QueueFull`.
    """

    def __init__(self, model: GPT, tokenizer: Tokenizer, max_batch: int = 8,
                 max_queue: int = 64) -> None:
        self.engine = Engine(model, tokenizer)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._waiting: deque[Row] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def largest_batch(self) -> int:
        return self.engine.largest_batch

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
        self.engine.running.extend(self._waiting)
        self._waiting = deque()
        self.engine.fail("the server is shutting down")

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
                while not self._stopping and not self._waiting and not self.engine.running:
                    self._cond.wait()
                if self._stopping:
                    return
            self.run_once()

    def run_once(self) -> None:
        """One turn: waiting rows join while there is room, abandoned rows leave, and every
        running row gets one token. The thread calls it in a loop; tests call it directly to
        choose what happens in each step."""
        engine = self.engine
        with self._cond:
            joining: list[Row] = []
            while self._waiting and len(engine.running) + len(joining) < self.max_batch:
                row = self._waiting.popleft()
                if not row.cancelled:
                    joining.append(row)
        try:
            engine.join(joining)
            engine.leave([i for i, r in enumerate(engine.running) if r.cancelled])
            if engine.running:
                engine.step()
        except Exception as exc:  # a bug or an out-of-memory: fail these rows, go on
            log.exception("generation failed")
            engine.running += [r for r in joining if r not in engine.running
                               and r.finish_reason is None]
            engine.fail(str(exc))
