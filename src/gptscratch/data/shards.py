"""Token shards: writing a split's ids as a sequence of bounded files, and reading them back
through memory maps as one array (`token_files` describes the folder they live in)."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from gptscratch.files import atomic_file

SHARD_TOKENS = 100_000_000  # 200 MB of uint16 ids per shard


class TokenSplit:
    """One split's token ids across its shards, read through memory maps as one array.

    Supports what training and evaluation need: `len`, integer and integer-array indexing
    (windows may cross a shard's end), slices, and `np.asarray` (which reads it all).
    """

    def __init__(self, maps: list[np.memmap[Any, np.dtype[Any]]]) -> None:
        self._maps = [m for m in maps if len(m)]
        self.dtype = maps[0].dtype if maps else np.dtype(np.uint16)
        self._ends = np.cumsum([len(m) for m in self._maps], dtype=np.int64)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, index: Any) -> Any:
        if len(self._maps) == 1:
            return self._maps[0][index]
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            return self[np.arange(start, stop, step, dtype=np.int64)]
        where = np.asarray(index, dtype=np.int64)
        if where.size and (where.min() < 0 or where.max() >= len(self)):
            raise IndexError(f"token index out of range (0..{len(self) - 1})")
        shard = np.searchsorted(self._ends, where, side="right")  # which shard holds each
        out = np.empty(where.shape, dtype=self.dtype)
        starts = np.concatenate([[0], self._ends[:-1]])
        for s in np.unique(shard):
            mask = shard == s
            out[mask] = self._maps[s][where[mask] - starts[s]]
        return out if out.ndim else out[()]

    def max(self) -> int:
        """The largest id (reads every shard once)."""
        return max(int(m.max()) for m in self._maps)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = (np.concatenate(self._maps) if len(self._maps) != 1
                 else np.asarray(self._maps[0]))
        return whole if dtype is None else whole.astype(dtype)


class ShardWriter:
    """Writes one split's ids as a sequence of shards, each an atomic file of at most
    `shard_tokens` ids, hashed as it is written. Use as a context manager: a failure removes
    the shard being written (finished shards are the caller's to remove)."""

    def __init__(self, out: Path, split: str, dtype: np.dtype[Any],
                 shard_tokens: int = SHARD_TOKENS, most_tokens: int | None = None) -> None:
        """`most_tokens`: an upper bound on the split's ids, where known, so that a full disk's
        message can say how much space a shard needs."""
        self.out, self.split, self.dtype, self.shard_tokens = out, split, dtype, shard_tokens
        self.most_tokens = most_tokens
        self.shards: list[dict[str, Any]] = []
        self.tokens = 0
        self._stack = contextlib.ExitStack()
        self._file: Any = None
        self._hash: Any = None
        self._in_shard = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self._finish_shard()
        self._stack.__exit__(*exc)

    def write(self, ids: np.ndarray) -> None:
        """Append ids (cast to the folder's dtype), starting new shards as each one fills."""
        ids = ids.astype(self.dtype, copy=False)
        while len(ids):
            if self._file is None:
                self._start_shard()
            room = self.shard_tokens - self._in_shard
            part, ids = ids[:room], ids[room:]
            data = part.tobytes()
            self._file.write(data)  # f.write keeps a failed write's errno (a full disk)
            self._hash.update(data)
            self._in_shard += len(part)
            self.tokens += len(part)
            if self._in_shard == self.shard_tokens:
                self._finish_shard()

    def _start_shard(self) -> None:
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self._shard_stack = contextlib.ExitStack()
        size = None if self.most_tokens is None else self.dtype.itemsize * max(
            0, min(self.shard_tokens, self.most_tokens - self.tokens))
        tmp = self._shard_stack.enter_context(atomic_file(self.out / name, size=size))
        self._file = self._shard_stack.enter_context(open(tmp, "wb"))
        self._stack.push(self._shard_stack)
        self._hash, self._in_shard, self._name = hashlib.sha256(), 0, name

    def _finish_shard(self) -> None:
        if self._file is None:
            return
        self._file = None
        self._shard_stack.close()  # closes the file, then moves it into place (fsynced)
        self.shards.append({"file": self._name, "tokens": self._in_shard,
                            "sha256": self._hash.hexdigest()})
