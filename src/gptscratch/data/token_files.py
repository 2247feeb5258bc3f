"""The prepared-data folder: memory-mapped token files and the metadata that vouches for them.

`prepare.py` writes a folder of `train.bin` / `val.bin` (flat arrays of token ids),
`tokenizer.json` and `meta.json`; the trainer, evaluation and script mode open it with
`load_prepared` and read the ids through memory maps (`PreparedData.train_tokens`), so a
corpus larger than memory still trains. `meta.json` is written last: a folder with a
`meta.json` is always complete.

`meta.json` holds: `format_version`, `tokenizer` (the spec), `tokenizer_kind`,
`tokenizer_fingerprint`, `vocab_size`, `eot_id`, `dtype` ("uint16" or "uint32"),
`train_tokens`, `val_tokens`, `train_bytes` and `val_bytes` (UTF-8 bytes of each split's
text, for bits per byte), `source` (a description), `source_sha256` (of the final text, after
lowercasing), `prepare_key` (a hash of that and every option), `val_fraction` and `lowercase`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gptscratch.data.tokenizers import Tokenizer, load_tokenizer, save_tokenizer
from gptscratch.errors import UserError
from gptscratch.files import atomic_file, claim, foreign_entries

FORMAT_VERSION = 1
META_FILE = "meta.json"
TRAIN_FILE = "train.bin"
VAL_FILE = "val.bin"
TOKENIZER_FILE = "tokenizer.json"

TokenArray = np.memmap[Any, np.dtype[Any]]


@dataclass(frozen=True)
class PreparedData:
    """A prepared folder: its `meta.json` contents and its tokenizer.

    Attributes:
        dir: The folder holding `train.bin`, `val.bin`, `tokenizer.json` and `meta.json`.
        meta: The parsed `meta.json` (see `prepare` for its keys).
        tokenizer: The tokenizer the ids were made with.
    """

    dir: Path
    meta: dict[str, Any]
    tokenizer: Tokenizer

    def train_tokens(self) -> TokenArray:
        """Memory-map the training ids: shape (train_tokens,), dtype `meta["dtype"]`."""
        return np.memmap(self.dir / TRAIN_FILE, dtype=np.dtype(self.meta["dtype"]), mode="r")

    def val_tokens(self) -> TokenArray:
        """Memory-map the validation ids: shape (val_tokens,), dtype `meta["dtype"]`."""
        return np.memmap(self.dir / VAL_FILE, dtype=np.dtype(self.meta["dtype"]), mode="r")


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """Return the smallest unsigned dtype that holds every id: uint16 up to 65,536 ids."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_prepared(
    out: Path, train: np.ndarray, val: np.ndarray, tok: Tokenizer, meta: dict[str, Any]
) -> None:
    """Write the four files, each atomically, with `meta.json` removed first and written last,
    into a folder marked as gptscratch's (`check_output_folder` has vouched for it)."""
    claim(out, "prepared data")
    (out / META_FILE).unlink(missing_ok=True)  # the folder is "not prepared" until the end
    for name, ids in ((TRAIN_FILE, train), (VAL_FILE, val)):
        with atomic_file(out / name, size=ids.nbytes) as tmp, open(tmp, "wb") as f:
            # f.write (unlike ndarray.tofile) keeps the errno of a failed write; in pieces,
            # so a large corpus is never copied whole
            for start in range(0, len(ids), 1 << 24):
                f.write(ids[start:start + (1 << 24)].tobytes())
    save_tokenizer(tok, out / TOKENIZER_FILE)
    with atomic_file(out / META_FILE) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def check_context_fits(train_tokens: int, val_tokens: int, context: int) -> None:
    """Each split must hold more tokens than one context window, or no batch can be drawn.

    Raises:
        UserError: a split is too short for the model's `context` (its block size).
    """
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        if n <= context:
            raise UserError(f"the {split} split has {n} tokens, fewer than one block of "
                            f"{context}+1; use a smaller --block-size (e.g. {max(8, n // 4)}) "
                            "or more text")


def check_output_folder(out: Path) -> None:
    """Refuse to prepare into a folder that holds anyone else's files: it must be new, empty,
    or gptscratch's (its marker, or a `meta.json` of ours from before the marker existed).

    Raises:
        UserError: `out` is a file, or a folder with files that are not gptscratch's.
    """
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


def load_prepared(dir: Path | str) -> PreparedData:
    """Open a folder written by `prepare`, checking that its files are whole.

    Raises:
        UserError: No `meta.json`, an unknown format, or token files whose sizes do not
            match the token counts in `meta.json`, or a tokenizer that does not match.
    """
    folder = Path(dir)
    redo = "run prepare on the text again"
    if not is_prepared_dir(folder):
        raise UserError(f"'{folder}' is not a prepared data folder (no {META_FILE}); {redo}")
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        version = meta["format_version"]
        dtype = np.dtype(meta["dtype"])
        counts = {TRAIN_FILE: meta["train_tokens"], VAL_FILE: meta["val_tokens"]}
        fingerprint = meta["tokenizer_fingerprint"]
        numbers = [*counts.values(), meta["vocab_size"], meta["train_bytes"], meta["val_bytes"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"'{folder / META_FILE}' is damaged ({exc!r:.120}); {redo}") from None
    if (dtype.name not in ("uint16", "uint32") or not isinstance(fingerprint, str)
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in numbers)):
        raise UserError(f"'{folder / META_FILE}' holds values of the wrong type or range (a "
                        f"token type {dtype.name}, counts {numbers}); it is damaged; {redo}")
    if version != FORMAT_VERSION:
        raise UserError(
            f"'{folder}' was prepared in format {version}, this gptscratch reads "
            f"format {FORMAT_VERSION}; {redo}"
        )
    for name, count in counts.items():
        path = folder / name
        size = path.stat().st_size if path.is_file() else None
        if size != count * dtype.itemsize:
            found = "is missing" if size is None else f"has {size} bytes"
            raise UserError(
                f"'{path}' {found} but {META_FILE} expects {count} {dtype.name} tokens "
                f"({count * dtype.itemsize} bytes); {redo}"
            )
    tok = load_tokenizer(folder / TOKENIZER_FILE)
    if tok.fingerprint() != fingerprint:
        raise UserError(f"'{folder / TOKENIZER_FILE}' does not match {META_FILE}; {redo}")
    return PreparedData(dir=folder, meta=meta, tokenizer=tok)
