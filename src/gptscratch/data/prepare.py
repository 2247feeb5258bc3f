"""Tokenize a corpus once into memory-mapped token files: the step between text and training.

`prepare` reads the text (`sources`), splits it into train and validation at a line boundary,
builds the tokenizer (`tokenizers`) and writes `train.bin` / `val.bin` (flat arrays of token
ids), `tokenizer.json` and `meta.json` into one folder. The trainer opens that folder with
`load_prepared` and draws batches from the memory maps (`batches.get_batch`), so a corpus
larger than memory still trains. `meta.json` is written last: a folder with a `meta.json` is
always complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gptscratch.data.cache import atomic_file, cache_dir
from gptscratch.data.sources import read_text_source, sha256_text
from gptscratch.data.tokenizers import (
    Tokenizer,
    build_tokenizer,
    load_tokenizer,
    parse_tokenizer_spec,
    save_tokenizer,
    split_for_encoding,
)
from gptscratch.errors import UserError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "meta.json"
TRAIN_FILE = "train.bin"
VAL_FILE = "val.bin"
TOKENIZER_FILE = "tokenizer.json"
# Text is tokenized in pieces of this many characters, which is also the progress-bar step;
# below it no bar is shown.
_PIECE_CHARS = 1_000_000

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


def split_train_val(text: str, val_fraction: float) -> tuple[str, str]:
    """Split `text` into (train, val): val is the last `val_fraction` of it.

    The cut moves forward from the exact point to the next line start, so no line (and no
    document, since documents are joined by blank lines) is split between the two.

    Raises:
        UserError: `val_fraction` is not strictly between 0 and 1.
    """
    _check_val_fraction(val_fraction)
    exact = int(len(text) * (1.0 - val_fraction))
    newline = text.find("\n", max(exact - 1, 0))
    cut = len(text) if newline < 0 else newline + 1
    return text[:cut], text[cut:]


def _check_val_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise UserError(
            f"val_fraction ({val_fraction}) must be between 0 and 1 (exclusive); try 0.1"
        )


def default_prepared_dir(source: str, tokenizer: str, hf_dataset: str | None = None) -> Path:
    """Return the folder `prepare` uses when no `out_dir` is given: one per input and tokenizer.

    It sits under `cache_dir()/prepared/`, named after the input plus a short hash of its full
    path (so two `input.txt` in different folders do not collide).
    """
    name = hf_dataset or source
    full = name if hf_dataset or name == "shakespeare" else str(Path(name).expanduser().resolve())
    stem = "".join(c if c.isalnum() or c in "-." else "-" for c in Path(name).name)[:40]
    digest = hashlib.sha256(full.encode("utf-8")).hexdigest()[:8]
    spec = tokenizer.strip().lower().replace(":", "")
    return cache_dir() / "prepared" / f"{stem or 'data'}-{digest}-{spec}"


def prepare(
    source: str,
    tokenizer: str | Tokenizer = "char",
    out_dir: Path | str | None = None,
    *,
    val_fraction: float = 0.1,
    lowercase: bool = False,
    hf_dataset: str | None = None,
    hf_split: str = "train",
    hf_text_column: str = "text",
    hf_data_files: list[str] | None = None,
    progress: bool = True,
) -> PreparedData:
    """Tokenize a corpus into `out_dir`, or reuse it if it was already prepared the same way.

    `meta.json` holds: `format_version`, `tokenizer` (the spec), `tokenizer_kind`,
    `tokenizer_fingerprint`, `vocab_size`, `eot_id`, `dtype` ("uint16" or "uint32"),
    `train_tokens`, `val_tokens`, `train_bytes` and `val_bytes` (UTF-8 bytes of each split's
    text, for bits per byte), `source` (a description), `source_sha256` (of the final text,
    after lowercasing), `prepare_key` (a hash of that and every option), `val_fraction` and
    `lowercase`.

    Args:
        source: What to read; see `sources.read_text_source`.
        tokenizer: `char`, `gpt2` or `bpe:N`, or an existing tokenizer to encode with as
            it is (fine-tuning a model keeps the model's own tokenizer).
        out_dir: Output folder; other files in it are left alone. Defaults to
            `default_prepared_dir(...)`.
        val_fraction: Share of the text, taken from its end, used for validation.
        lowercase: Lowercase the text first.
        hf_dataset: Load from this Hugging Face dataset instead of `source`.
        hf_split: The dataset split.
        hf_text_column: The dataset column holding text.
        hf_data_files: Local files for a dataset builder such as `text`.
        progress: Show a progress bar on a terminal for inputs over 1 MB.

    Returns:
        The prepared folder, opened.

    Raises:
        UserError: Bad options, an unreadable or empty input, or splits too small to use.
    """
    given = None if isinstance(tokenizer, str) else tokenizer
    if given is None:
        kind, bpe_size = parse_tokenizer_spec(str(tokenizer))  # fail before reading anything
    else:
        kind, bpe_size = given.kind, (given.vocab_size if given.kind == "bpe" else None)
    spec = kind if bpe_size is None else f"{kind}:{bpe_size}"
    _check_val_fraction(val_fraction)
    out = Path(out_dir) if out_dir is not None else default_prepared_dir(source, spec, hf_dataset)
    started = time.perf_counter()

    text, description = read_text_source(
        source,
        hf_split=hf_split,
        hf_text_column=hf_text_column,
        hf_dataset=hf_dataset,
        hf_data_files=hf_data_files,
    )
    if lowercase:
        text = text.lower()
    source_sha = sha256_text(text)
    options = {
        "format_version": FORMAT_VERSION,
        "source_sha256": source_sha,
        "tokenizer": spec,
        "val_fraction": val_fraction,
        "lowercase": lowercase,
    }
    if given is not None:
        options["tokenizer_fingerprint"] = given.fingerprint()
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode("utf-8")).hexdigest()
    if is_prepared_dir(out):
        try:
            existing = load_prepared(out)
        except UserError as exc:
            logger.info("rewriting %s: %s", out, exc)
        else:
            if existing.meta.get("prepare_key") == key:
                logger.info("reusing prepared data in %s (same text and options)", out)
                return existing

    train_text, val_text = split_train_val(text, val_fraction)
    if not val_text.strip():
        raise UserError(
            f"the validation split is empty (the last {val_fraction:.0%} of the text has no "
            "line break to cut at); lower --val-fraction or give more text"
        )
    # The char vocabulary comes from the whole text, so validation characters are covered.
    tok = given or build_tokenizer(spec, text if kind == "char" else train_text)
    with tqdm(
        total=len(text),
        unit="char",
        unit_scale=True,
        desc=f"tokenizing ({spec})",
        disable=True if not progress or len(text) <= _PIECE_CHARS else None,
    ) as bar:
        train_ids = _encode(tok, train_text, bar)
        val_ids = _encode(tok, val_text, bar)
    if len(train_ids) < 2 or len(val_ids) < 1:
        raise UserError(
            f"splits too small ({len(train_ids)} train and {len(val_ids)} validation tokens); "
            "lower --val-fraction or give more text"
        )

    dtype = token_dtype(tok.vocab_size)
    meta: dict[str, Any] = {
        **options,
        "tokenizer_kind": tok.kind,
        "tokenizer_fingerprint": tok.fingerprint(),
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "dtype": dtype.name,
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "train_bytes": len(train_text.encode("utf-8")),
        "val_bytes": len(val_text.encode("utf-8")),
        "source": description,
        "prepare_key": key,
    }
    _write_prepared(out, train_ids.astype(dtype), val_ids.astype(dtype), tok, meta)
    total = len(train_ids) + len(val_ids)
    logger.info(
        "prepared %s: %d train + %d val tokens (%s, vocab %d, %.2f bytes/token) in %.1f s",
        out, len(train_ids), len(val_ids), spec, tok.vocab_size,
        (meta["train_bytes"] + meta["val_bytes"]) / total, time.perf_counter() - started,
    )  # fmt: skip
    return PreparedData(dir=out, meta=meta, tokenizer=tok)


def _encode(tok: Tokenizer, text: str, bar: tqdm[Any]) -> np.ndarray:
    """Encode `text` piece by piece (advancing `bar`) into one int array."""
    arrays = []
    for piece in split_for_encoding(text, _PIECE_CHARS):
        arrays.append(tok.encode_array(piece))
        bar.update(len(piece))
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)


def _write_prepared(
    out: Path, train: np.ndarray, val: np.ndarray, tok: Tokenizer, meta: dict[str, Any]
) -> None:
    """Write the four files, each atomically, with `meta.json` removed first and written last."""
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)  # the folder is "not prepared" until the end
    for name, ids in ((TRAIN_FILE, train), (VAL_FILE, val)):
        with atomic_file(out / name) as tmp:
            ids.tofile(tmp)
    save_tokenizer(tok, out / TOKENIZER_FILE)
    with atomic_file(out / META_FILE) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
        counts = {TRAIN_FILE: int(meta["train_tokens"]), VAL_FILE: int(meta["val_tokens"])}
        fingerprint = meta["tokenizer_fingerprint"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"'{folder / META_FILE}' is damaged ({exc!r}); {redo}") from exc
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
