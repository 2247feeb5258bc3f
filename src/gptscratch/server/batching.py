"""Continuous batching for the server: a bounded queue and one thread in front of the engine,
which owns the model; before every step waiting rows join the batch (up to `max_batch`) and
abandoned rows leave it. A request's `Job` carries its rows' `RowEvent`s back to its event
loop, and cancels the rows when its client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.generation.engine import Engine, Row, RowEvent, RowRequest, Sink, default_max_batch
from gptscratch.model.gpt import GPT
from gptscratch.server.errors import APIError

log = logging.getLogger("gptscratch")
LISTEN_S = 0.25  # how often a request waiting for its whole answer checks its client


class QueueFull(Exception):
    """The waiting queue cannot take the request's rows (the server answers 429)."""


class EngineStopped(Exception):
    """The engine is not running (the server answers 503)."""


class BatchingEngine:
    """The decoding engine on a thread of its own (the only one to run `model`), fed from a
    bounded queue: `max_batch` rows decode together (None: `default_max_batch`), and
    `max_queue` rows may wait to join."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, max_batch: int | None = 8,
                 max_queue: int = 64) -> None:
        self.engine = Engine(model, tokenizer)
        if max_batch is None:
            max_batch = default_max_batch(model)
            log.info("decoding up to %d sequences together (set it with --max-batch)", max_batch)
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
        self._thread = threading.Thread(target=self._loop, name="gptscratch-engine", daemon=True)
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
                raise QueueFull(f"the queue is full ({self.max_queue} waiting rows); retry later")
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
        running row gets one token (the thread loops on it; tests call it to choose each step)."""
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


class Job:
    """The rows of one request, queued in the engine, and their events as they come.

    Raises (when built):
        APIError: 429 when the engine's queue is full, 503 when the engine is not running.
    """

    def __init__(self, engine: BatchingEngine, rows: Sequence[RowRequest]) -> None:
        self.engine = engine
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, RowEvent]] = asyncio.Queue()
        sinks = [functools.partial(self._put, i) for i in range(len(rows))]
        try:
            self.handles = engine.submit(rows, sinks)
        except QueueFull as e:
            raise APIError(429, str(e), None, "queue_full") from None
        except EngineStopped as e:
            raise APIError(503, str(e), None, "engine_stopped") from None
        self.open = len(rows)

    def _put(self, index: int, event: RowEvent) -> None:
        """Called on the engine's thread."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))

    async def events(self) -> AsyncIterator[tuple[int, RowEvent]]:
        """(row index, event) pairs until every row has finished."""
        try:
            while self.open:
                index, event = await self.queue.get()
                if event.finish_reason is not None:
                    self.open -= 1
                yield index, event
        finally:  # cancelled (the client left) or closed early: free the rows at once
            if self.open:
                self.engine.cancel(self.handles)

    async def collect(self, left: Callable[[], Awaitable[bool]] | None = None
                      ) -> list[list[RowEvent]] | None:
        """Every row's events, once all rows have finished; None if `left()` says the client
        has gone first (asked every quarter second), and then its rows are cancelled: an
        answer that nobody will read must not hold rows of the batch to max_tokens."""
        out: list[list[RowEvent]] = [[] for _ in self.handles]

        async def gather() -> None:
            async for index, event in self.events():
                out[index].append(event)

        task = asyncio.ensure_future(gather())
        while not (await asyncio.wait({task}, timeout=LISTEN_S))[0]:
            if left is not None and await left():
                task.cancel()  # `events` cancels the rows as it unwinds
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return None
        task.result()
        return out
