"""One HTTP request's rows in the engine: from checked fields to rows, and events back.

`rows_for` encodes the prompts (refusing characters a char tokenizer never saw, and prompts
longer than the server allows) and makes one `RowRequest` per choice: choice j of a prompt
is seeded with `seed + j`, so choice 0 is what `api.complete` gives with `seed`. A `Job`
hands the rows to the engine and carries their events from the engine's thread to the
request's event loop; when the request's task ends early (its client disconnected), the job
cancels its rows, which leave the batch before the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.errors import UserError
from gptscratch.generation.engine import RowEvent, RowRequest
from gptscratch.generation.stops import StopRule
from gptscratch.model.config import SamplingConfig
from gptscratch.server.batching import BatchingEngine, EngineStopped, QueueFull
from gptscratch.server.config import ServeConfig
from gptscratch.server.errors import APIError

LISTEN_S = 0.25  # how often a request waiting for its whole answer checks its client


def check_length(ids: list[int], limits: ServeConfig, param: str) -> list[int]:
    """Raises APIError 413 for a prompt over the server's limit; else returns it."""
    if len(ids) > limits.max_prompt_tokens:
        raise APIError(413, f"{param} has {len(ids):,} tokens; this server takes at most "
                            f"{limits.max_prompt_tokens:,}", param, "prompt_too_long")
    return ids


def encode(tokenizer: Tokenizer, text: str, limits: ServeConfig, param: str) -> list[int]:
    """A prompt's token ids; an empty prompt is the end-of-text token where there is one.

    Raises:
        APIError: 400 for characters the tokenizer cannot encode or an empty prompt without
            an end-of-text token; 413 for a prompt over the server's limit.
    """
    try:
        ids = tokenizer.encode(text)
    except UserError as e:
        found = str(e).split("; the model", 1)[0].replace("text has", f"{param} has", 1)
        raise APIError(400, found, param, "unknown_characters") from None
    if not ids:
        if tokenizer.eot_id is None:
            raise APIError(400, f"{param} is empty; give some text to continue", param)
        ids = [tokenizer.eot_id]
    return check_length(ids, limits, param)


def check_ids(ids: list[int], vocab_size: int, limits: ServeConfig, param: str) -> list[int]:
    """A prompt given as token ids, checked like a text prompt.

    Raises:
        APIError: 400 for no ids or an id outside the vocabulary; 413 for too many.
    """
    if not ids:
        raise APIError(400, f"{param} is an empty list of token ids; give at least one", param)
    bad = next((i for i in ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise APIError(400, f"{param} has token id {bad}, outside this model's vocabulary "
                            f"(0 to {vocab_size - 1})", param, "unknown_token")
    return check_length(ids, limits, param)


def rows_for(prompts: Sequence[list[int]], n: int, max_tokens: int, sampling: SamplingConfig,
             seed: int | None, rules: Sequence[StopRule], top_logprobs: int | None,
             score_prompt: bool = False) -> list[RowRequest]:
    """Row i * n + j is choice j of prompt i, seeded with seed + j."""
    return [RowRequest(tuple(ids), max_tokens, sampling, None if seed is None else seed + j,
                       tuple(rules), top_logprobs, score_prompt)
            for ids in prompts for j in range(n)]


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
