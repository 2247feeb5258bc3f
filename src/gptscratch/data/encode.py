"""Tokenizing a stream of text in worker processes, in order and in bounded memory: the
encoding step of `prepare`. A small corpus (under `_POOL_MIN_CHARS`) is encoded in this
process, where starting workers would cost more than it saves.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from gptscratch.data.sources import DOCUMENT_SEPARATOR
from gptscratch.data.token_files import token_dtype
from gptscratch.data.tokenizers import Tokenizer, tokenizer_from_dict

_BATCH_CHARS = 4_000_000  # text per task sent to a worker
_IN_FLIGHT_PER_WORKER = 2  # tasks queued per worker: what bounds memory
_POOL_MIN_CHARS = 8_000_000


@dataclass(frozen=True)
class Piece:
    """A piece of document number `doc` (from 0) bound for validation if `val`; `first` and
    `end` mark the document's first and last piece (whose ids end with end-of-text)."""

    doc: int
    text: str
    end: bool
    val: bool
    first: bool = False


@dataclass(frozen=True)
class Encoded:
    """A piece's token ids. `num_bytes` is the UTF-8 size of its text (for bits per byte)."""

    doc: int
    ids: np.ndarray
    end: bool
    val: bool
    num_bytes: int


def default_workers() -> int:
    """All the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def encode_stream(tok: Tokenizer, pieces: Iterator[Piece], *, workers: int,
                  lowercase: bool = False) -> Iterator[Encoded]:
    """Encode `pieces` in order with `tok` in `workers` processes (1: in this one). A
    document's last piece ends with `tok.eot_id` (a char vocabulary saved without one, from an
    old model, separates documents by a blank line instead); errors come back as they are."""
    dtype = token_dtype(tok.vocab_size)
    batches = _batches(pieces)
    if workers <= 1:
        for batch in batches:
            yield from _encode_batch(tok, batch, lowercase, dtype)
        return
    # Look ahead: a small corpus is done before a pool would have started.
    head: list[list[Piece]] = []
    chars = 0
    for batch in batches:
        head.append(batch)
        chars += sum(len(p.text) for p in batch)
        if chars >= _POOL_MIN_CHARS:
            break
    else:
        for batch in head:
            yield from _encode_batch(tok, batch, lowercase, dtype)
        return
    yield from _encode_in_pool(tok, itertools.chain(head, batches), workers, lowercase, dtype)


def _batches(pieces: Iterator[Piece]) -> Iterator[list[Piece]]:
    batch: list[Piece] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece.text)
        if size >= _BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _encode_in_pool(tok: Tokenizer, batches: Iterator[list[Piece]], workers: int,
                    lowercase: bool, dtype: np.dtype[Any]) -> Iterator[Encoded]:
    # spawn, not fork: the parent may hold torch's threads, which a fork would copy broken.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_start_worker,
                  initargs=(tok.to_dict(), lowercase, dtype.str)) as pool:
        pending: deque[Any] = deque()
        for batch in batches:
            pending.append(pool.apply_async(_worker_encode, (batch,)))
            if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


_worker: dict[str, Any] = {}


def _start_worker(tok_dict: dict[str, Any], lowercase: bool, dtype: str) -> None:
    """Build the worker's own tokenizer, single-threaded: the workers are the parallelism."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tok = tokenizer_from_dict(tok_dict)
    if hasattr(tok, "threads"):
        tok.threads = 1
    _worker.update(tok=tok, lowercase=lowercase, dtype=np.dtype(dtype))


def _worker_encode(batch: list[Piece]) -> list[Encoded]:
    return _encode_batch(_worker["tok"], batch, _worker["lowercase"], _worker["dtype"])


def _encode_batch(tok: Tokenizer, batch: list[Piece], lowercase: bool,
                  dtype: np.dtype[Any]) -> list[Encoded]:
    out = []
    for p in batch:
        text = p.text.lower() if lowercase else p.text
        if p.first and p.doc > 0 and tok.eot_id is None:
            text = DOCUMENT_SEPARATOR + text
        ids = tok.encode_array(text)
        if p.end and tok.eot_id is not None:
            ids = np.append(ids, np.int32(tok.eot_id))
        out.append(Encoded(p.doc, ids.astype(dtype), p.end, p.val, len(text.encode("utf-8"))))
    return out
