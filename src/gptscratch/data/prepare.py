"""Tokenize a corpus once into memory-mapped token files: the step between text and training.

`prepare` reads the text (`sources`), splits it into train and validation at a line boundary,
builds the tokenizer (`tokenizers`) and writes the folder that `token_files.py` describes
(`train.bin` / `val.bin`, `tokenizer.json`, `meta.json`), or reuses it when the same text was
already prepared the same way. The trainer opens it with `load_prepared` and draws batches
from the memory maps (`batches.get_batch`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gptscratch.data.sources import read_text_source
from gptscratch.data.token_files import (
    FORMAT_VERSION,
    PreparedData,
    check_context_fits,
    check_output_folder,
    is_prepared_dir,
    load_prepared,
    token_dtype,
    write_prepared,
)
from gptscratch.data.tokenizers import (
    Tokenizer,
    build_tokenizer,
    parse_tokenizer_spec,
    split_for_encoding,
)
from gptscratch.errors import UserError
from gptscratch.files import cache_dir, sha256_bytes

logger = logging.getLogger(__name__)

# Text is tokenized in pieces of this many characters, which is also the progress-bar step;
# below it no bar is shown.
_PIECE_CHARS = 1_000_000


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
    digest = sha256_bytes(full.encode("utf-8"))[:8]
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
    replace: bool = True,
    context: int | None = None,
) -> PreparedData:
    """Tokenize a corpus into `out_dir`, or reuse it if it was already prepared the same way
    (`token_files.py` describes the folder and its `meta.json`).

    Args:
        source: What to read; see `sources.read_text_source`.
        tokenizer: `char`, `gpt2` or `bpe:N`, or an existing tokenizer to encode with as
            it is (fine-tuning a model keeps the model's own tokenizer).
        out_dir: Output folder: new, empty or gptscratch's own (it is refused otherwise).
            Defaults to `default_prepared_dir(...)`.
        val_fraction: Share of the text, taken from its end, used for validation.
        lowercase: Lowercase the text first.
        hf_dataset, hf_split, hf_text_column, hf_data_files: Load from this Hugging Face
            dataset (its split, text column, local files for a builder such as `text`).
        progress: Show a progress bar on a terminal for inputs over 1 MB.
        replace: Whether other data prepared in `out_dir` may be replaced (not a run's own).
        context: The block size of the model the data is for (checked before any write).

    Returns the prepared folder, opened. Raises UserError for bad options, an unreadable or
    empty input, splits too small, or an output folder that is not ours to write.
    """
    given = None if isinstance(tokenizer, str) else tokenizer
    spec = _spec_of(tokenizer)  # fail before reading anything
    _check_val_fraction(val_fraction)
    out = Path(out_dir) if out_dir is not None else default_prepared_dir(source, spec, hf_dataset)
    check_output_folder(out)
    started = time.perf_counter()
    text, description = read_text_source(
        source, hf_split=hf_split, hf_text_column=hf_text_column, hf_dataset=hf_dataset,
        hf_data_files=hf_data_files)
    if lowercase:
        text = text.lower()
    options = {"format_version": FORMAT_VERSION, "source_sha256": sha256_bytes(text.encode()),
               "tokenizer": spec, "val_fraction": val_fraction, "lowercase": lowercase}
    if given is not None:
        options["tokenizer_fingerprint"] = given.fingerprint()
    key = sha256_bytes(json.dumps(options, sort_keys=True).encode("utf-8"))
    existing = _reusable(out, key, replace)
    if existing is not None:
        return existing
    train_text, val_text = split_train_val(text, val_fraction)
    if not val_text.strip():
        raise UserError(
            f"the validation split is empty (the last {val_fraction:.0%} of the text has no "
            "line break to cut at); lower --val-fraction or give more text"
        )
    # The char vocabulary comes from the whole text, so validation characters are covered.
    tok = given or build_tokenizer(spec, text if spec == "char" else train_text)
    train_ids, val_ids = _encode_splits(tok, train_text, val_text, spec, progress)
    if context is not None:
        check_context_fits(len(train_ids), len(val_ids), context)
    dtype = token_dtype(tok.vocab_size)
    meta: dict[str, Any] = {
        **options, "tokenizer_kind": tok.kind, "tokenizer_fingerprint": tok.fingerprint(),
        "vocab_size": tok.vocab_size, "eot_id": tok.eot_id, "dtype": dtype.name,
        "train_tokens": len(train_ids), "val_tokens": len(val_ids),
        "train_bytes": len(train_text.encode("utf-8")),
        "val_bytes": len(val_text.encode("utf-8")), "source": description, "prepare_key": key,
    }
    write_prepared(out, train_ids.astype(dtype), val_ids.astype(dtype), tok, meta)
    _log_prepared(out, meta, time.perf_counter() - started)
    return PreparedData(dir=out, meta=meta, tokenizer=tok)


def _log_prepared(out: Path, meta: dict[str, Any], seconds: float) -> None:
    tokens = meta["train_tokens"] + meta["val_tokens"]
    logger.info(
        "prepared %s: %s train + %s val tokens (%s, vocabulary %s, %.2f bytes/token) in %.1f s",
        out, f"{meta['train_tokens']:,}", f"{meta['val_tokens']:,}", meta["tokenizer"],
        f"{meta['vocab_size']:,}", (meta["train_bytes"] + meta["val_bytes"]) / tokens, seconds,
    )  # fmt: skip


def _spec_of(tokenizer: str | Tokenizer) -> str:
    """The tokenizer's spec (`char`, `gpt2`, `bpe:N`), checked; a given tokenizer's own."""
    if isinstance(tokenizer, str):
        kind, bpe_size = parse_tokenizer_spec(tokenizer)
    else:
        kind, bpe_size = tokenizer.kind, (tokenizer.vocab_size if tokenizer.kind == "bpe" else None)
    return kind if bpe_size is None else f"{kind}:{bpe_size}"


def _reusable(out: Path, key: str, replace: bool) -> PreparedData | None:
    """The folder's prepared data, if it was made from the same text with the same options.

    Raises:
        UserError: it holds other data, and `replace` is off.
    """
    if not is_prepared_dir(out):
        return None
    try:
        existing = load_prepared(out)
    except UserError as exc:
        logger.info("rewriting %s: %s", out, exc)
        return None
    if existing.meta.get("prepare_key") != key:
        if not replace:
            raise UserError(f"'{out}' holds the data this run was trained on "
                            f"({existing.meta.get('source', 'another corpus')}), not this "
                            "text; resume without --data, or start a new run with a new --out")
        return None
    logger.info("reusing prepared data in %s (same text and options)", out)
    return existing


def _encode_splits(tok: Tokenizer, train_text: str, val_text: str, spec: str,
                   progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both splits' ids, with a progress bar on a terminal for inputs over 1 MB."""
    size = len(train_text) + len(val_text)
    with tqdm(total=size, unit="char", unit_scale=True, desc=f"tokenizing ({spec})",
              disable=True if not progress or size <= _PIECE_CHARS else None) as bar:
        train_ids = _encode(tok, train_text, bar)
        val_ids = _encode(tok, val_text, bar)
    if len(train_ids) < 2 or len(val_ids) < 1:
        raise UserError(
            f"splits too small ({len(train_ids)} train and {len(val_ids)} validation tokens); "
            "lower --val-fraction or give more text"
        )
    return train_ids, val_ids


def _encode(tok: Tokenizer, text: str, bar: tqdm[Any]) -> np.ndarray:
    """Encode `text` piece by piece (advancing `bar`) into one int array."""
    arrays = []
    for piece in split_for_encoding(text, _PIECE_CHARS):
        arrays.append(tok.encode_array(piece))
        bar.update(len(piece))
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)


