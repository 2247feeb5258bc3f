"""The prepared-data folder: sharded token files and the `meta.json` that vouches for them.

`prepare` writes `train-00000.bin`, ..., `val-00000.bin` (flat arrays of ids, `ShardWriter`),
`tokenizer.json` and, last, `meta.json`: a folder with a `meta.json` is complete. The trainer,
evaluation and script mode open it with `load_prepared` and read each split through memory
maps as one array (`TokenSplit`), so a corpus far larger than memory still trains.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gptscratch.data.tokenizers import Tokenizer, load_tokenizer, save_tokenizer
from gptscratch.errors import UserError
from gptscratch.files import (
    atomic_file,
    cache_dir,
    claim,
    foreign_entries,
    sha256_bytes,
    sha256_file,
)

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
SPLITS = ("train", "val")
SHARD_TOKENS = 100_000_000  # 200 MB of uint16 ids per shard
# Conversation data (`prepare_chat`) keeps two more arrays per split beside the ids: a byte
# per id (1: a training target, `ChatTemplate.render`'s mask) and each conversation's length.
CHAT_PARTS: dict[str, np.dtype[Any]] = {"targets": np.dtype(np.uint8),
                                         "lengths": np.dtype(np.uint32)}
# Token files gptscratch writes (format 1's two, format 2's shards): the only ones it removes.
_TOKEN_FILE = re.compile(r"(train|val)(_targets|_lengths)?(-\d{5})?\.bin")


class TokenSplit:
    """One split's ids across its shards, read through memory maps as one array: `len`,
    integer and integer-array indexing (windows may cross a shard's end), slices, and
    `np.asarray` (which reads it all)."""

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


# What the trainer and evaluation read ids from: a split of shards, or any 1-D int array.
Tokens = np.ndarray | TokenSplit


class ShardWriter:
    """Writes one split's ids as shards, atomic files of at most `shard_tokens` ids hashed as
    written; `most_tokens` (an upper bound, where known) sizes a full disk's message. As a
    context manager, a failure removes the shard being written (finished ones: the caller)."""

    def __init__(self, out: Path, split: str, dtype: np.dtype[Any],
                 shard_tokens: int = SHARD_TOKENS, most_tokens: int | None = None) -> None:
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


@dataclass(frozen=True)
class PreparedData:
    """A prepared folder and its tokenizer. `meta` (`meta.json`) holds the tokenizer's spec
    (`tokenizer`), kind, fingerprint, `vocab_size` and `eot_id`, the ids' `dtype`, each split's
    `_tokens`, `_bytes` (UTF-8, for bits per byte), `_documents` and `shards` (`{"file",
    "tokens", "sha256"}`), the `source` and its fingerprint, the options and their hash
    (`prepare_key`), and `format_version` (2; format 1's `train.bin` / `val.bin` still load)."""

    dir: Path
    meta: dict[str, Any]
    tokenizer: Tokenizer

    def tokens(self, split: str) -> TokenSplit:
        """Memory-map a split's ids ("train" or "val") as one array of `meta["dtype"]`."""
        dtype = np.dtype(self.meta["dtype"])
        return TokenSplit([np.memmap(self.dir / s["file"], dtype=dtype, mode="r")
                           for s in shards_of(self.meta)[split] if s["tokens"]])

    @property
    def is_chat(self) -> bool:
        """Whether this is conversation data (`prepare_chat`): ids with a loss mask."""
        return bool(self.meta.get("content") == "conversations")

    def chat_part(self, split: str, part: str) -> TokenSplit:
        """Conversation data's `targets` (uint8, one per id) or `lengths` (uint32, one per
        conversation) of a split."""
        return TokenSplit([np.memmap(self.dir / s["file"], dtype=CHAT_PARTS[part], mode="r")
                           for s in shards_of(self.meta)[f"{split}_{part}"] if s["tokens"]])

    def train_tokens(self) -> TokenSplit:
        """The training ids, shape (train_tokens,)."""
        return self.tokens("train")

    def val_tokens(self) -> TokenSplit:
        """The validation ids, shape (val_tokens,)."""
        return self.tokens("val")


def shards_of(meta: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each split's shards, `[{"file", "tokens", ...}]`; format 1's single files as one shard."""
    if meta.get("format_version") == 1:
        return {s: [{"file": f"{s}.bin", "tokens": meta[f"{s}_tokens"]}] for s in SPLITS}
    shards: dict[str, list[dict[str, Any]]] = meta["shards"]
    return shards


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """Return the smallest unsigned dtype that holds every id: uint16 up to 65,536 ids."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def remove_token_files(out: Path) -> None:
    """Delete the token files of an earlier prepare in a folder of ours (nothing else)."""
    for path in out.iterdir():
        if _TOKEN_FILE.fullmatch(path.name) and path.is_file():
            path.unlink()


def write_meta(out: Path, tok: Tokenizer, meta: dict[str, Any]) -> None:
    """Write `tokenizer.json`, then `meta.json` (last: it marks the folder complete)."""
    save_tokenizer(tok, out / TOKENIZER_FILE)
    with atomic_file(out / META_FILE) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def start_writing(out: Path) -> None:
    """Make `out` ours and "not prepared" (no `meta.json`) with no old token files, before the
    first shard is written (`check_output_folder` has vouched for it)."""
    claim(out, "prepared data")
    (out / META_FILE).unlink(missing_ok=True)
    remove_token_files(out)


def default_prepared_dir(source: str, tokenizer: str, hf_dataset: str | None = None) -> Path:
    """The folder `prepare` uses without `out_dir`: under `cache_dir()/prepared/`, named after
    the input, a short hash of its full path (two `input.txt` do not collide) and the tokenizer."""
    name = hf_dataset or source
    full = name if hf_dataset or name == "shakespeare" else str(Path(name).expanduser().resolve())
    stem = "".join(c if c.isalnum() or c in "-." else "-" for c in Path(name).name)[:40]
    digest = sha256_bytes(full.encode("utf-8"))[:8]
    spec = tokenizer.strip().lower().replace(":", "")
    return cache_dir() / "prepared" / f"{stem or 'data'}-{digest}-{spec}"


def check_context_fits(train_tokens: int, val_tokens: int, context: int) -> None:
    """Raise a UserError unless each split is longer than `context` (the block size)."""
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        if n <= context:
            raise UserError(f"the {split} split has {n} tokens, fewer than one block of "
                            f"{context}+1; use a smaller --block-size (e.g. {max(8, n // 4)}) "
                            "or more text")


def check_output_folder(out: Path) -> None:
    """Refuse (UserError) a file, or a folder holding anyone else's files: `out` must be new,
    empty, or gptscratch's (its marker, or a `meta.json` of ours from before the marker)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"'{out}' is a file; give a folder for the prepared data")
    foreign = foreign_entries(out, is_prepared_dir)
    if foreign:
        raise UserError(f"'{out}' is not empty ({', '.join(foreign[:5])}) and holds no data "
                        "gptscratch prepared; gptscratch writes only into folders it made: "
                        "choose a new or empty --out")


def is_prepared_dir(path: Path | str) -> bool:
    """Whether `path` looks like a prepared folder (it has a `meta.json`)."""
    return (Path(path) / META_FILE).is_file()


def load_prepared(dir: Path | str, *, verify: bool = False) -> PreparedData:
    """Open a folder written by `prepare`, checking that its files are whole (with `verify`,
    every shard's sha256 too: that reads all the data).

    Raises:
        UserError: No `meta.json`, an unknown format, or shards or a tokenizer that do not
            match `meta.json`.
    """
    folder = Path(dir)
    redo = "run prepare on the text again"
    if not is_prepared_dir(folder):
        raise UserError(f"'{folder}' is not a prepared data folder (no {META_FILE}); {redo}")
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        version = meta["format_version"]
        if version not in READABLE_VERSIONS:
            raise UserError(f"'{folder}' was prepared in format {version}, this gptscratch "
                            f"reads formats {READABLE_VERSIONS}; {redo}")
        dtype = np.dtype(meta["dtype"])
        shards = shards_of(meta)
        fingerprint = meta["tokenizer_fingerprint"]
        numbers = [meta["train_tokens"], meta["val_tokens"], meta["vocab_size"],
                   meta["train_bytes"], meta["val_bytes"]]
        numbers += [s["tokens"] for split in SPLITS for s in shards[split]]
        names = [s["file"] for entries in shards.values() for s in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"'{folder / META_FILE}' is damaged ({exc!r:.120}); {redo}") from None
    if (dtype.name not in ("uint16", "uint32") or not isinstance(fingerprint, str)
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in numbers)
            or any(not isinstance(n, str) or not _TOKEN_FILE.fullmatch(n) for n in names)):
        raise UserError(f"'{folder / META_FILE}' holds values of the wrong type or range (a "
                        f"token type {dtype.name}, counts {numbers[:5]}, files {names[:4]}); "
                        f"it is damaged; {redo}")
    for split in SPLITS:
        if sum(s["tokens"] for s in shards[split]) != meta[f"{split}_tokens"]:
            raise UserError(f"'{folder / META_FILE}' lists {split} shards that do not add up "
                            f"to its {split}_tokens; it is damaged; {redo}")
        for shard in shards[split]:
            _check_shard(folder / shard["file"], shard, dtype, verify, redo)
    if meta.get("content") == "conversations":
        _check_chat_parts(folder, meta, shards, verify, redo)
    tok = load_tokenizer(folder / TOKENIZER_FILE)
    if tok.fingerprint() != fingerprint:
        raise UserError(f"'{folder / TOKENIZER_FILE}' does not match {META_FILE}; {redo}")
    return PreparedData(dir=folder, meta=meta, tokenizer=tok)


def _check_chat_parts(folder: Path, meta: dict[str, Any], shards: dict[str, Any], verify: bool,
                      redo: str) -> None:
    """Conversation data's masks hold one byte per id, and its lengths add up to the ids."""
    for split in SPLITS:
        for part, dtype in CHAT_PARTS.items():
            entries = shards.get(f"{split}_{part}")
            if not isinstance(entries, list):
                raise UserError(f"'{folder / META_FILE}' lists no {split} {part}; it is "
                                f"damaged; {redo}")
            for shard in entries:
                _check_shard(folder / shard["file"], shard, dtype, verify, redo)
        masks = sum(s["tokens"] for s in shards[f"{split}_targets"])
        lengths = PreparedData(folder, meta, None).chat_part(split, "lengths")  # type: ignore[arg-type]
        if masks != meta[f"{split}_tokens"] or int(np.asarray(lengths, dtype=np.int64).sum()) \
                != meta[f"{split}_tokens"]:
            raise UserError(f"'{folder}' holds {split} conversations whose masks or lengths do "
                            f"not match its {meta[f'{split}_tokens']} ids; it is damaged; {redo}")


def _check_shard(path: Path, shard: dict[str, Any], dtype: np.dtype[Any], verify: bool,
                 redo: str) -> None:
    count = shard["tokens"]
    size = path.stat().st_size if path.is_file() else None
    if size != count * dtype.itemsize:
        found = "is missing" if size is None else f"has {size} bytes"
        raise UserError(f"'{path}' {found} but {META_FILE} expects {count} {dtype.name} "
                        f"tokens ({count * dtype.itemsize} bytes); {redo}")
    if verify and "sha256" in shard and sha256_file(path) != shard["sha256"]:
        raise UserError(f"'{path}' does not match its sha256 in {META_FILE}: it changed "
                        f"after it was written; {redo}")
