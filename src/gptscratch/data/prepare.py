"""Tokenize a corpus once into sharded, memory-mapped token files: the step between text and
training. `prepare` streams a source's documents, learns the tokenizer where it needs the text,
encodes in worker processes (`encode`) and writes the shards as it goes, in bounded memory;
`meta.json` comes last (`token_files`), so an interrupted run leaves nothing that looks
prepared. A folder prepared from the same sources with the same options is reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gptscratch.data.encode import Encoded, Piece, default_workers, encode_stream
from gptscratch.data.sources import Source, open_source
from gptscratch.data.token_files import (
    FORMAT_VERSION,
    SHARD_TOKENS,
    PreparedData,
    ShardWriter,
    check_context_fits,
    check_output_folder,
    default_prepared_dir,
    is_prepared_dir,
    load_prepared,
    remove_token_files,
    start_writing,
    token_dtype,
    write_meta,
)
from gptscratch.data.tokenizers import (
    CharTokenizer,
    Tokenizer,
    build_tokenizer,
    parse_tokenizer_spec,
)
from gptscratch.errors import UserError
from gptscratch.files import remove_leftovers, sha256_bytes

logger = logging.getLogger(__name__)

DEFAULT_BPE_SAMPLE_MB = 200.0


def prepare(
    source: str, tokenizer: str | Tokenizer = "char", out_dir: Path | str | None = None, *,
    val_fraction: float = 0.1, lowercase: bool = False, text_column: str = "text",
    hf_dataset: str | None = None, hf_split: str = "train", hf_text_column: str | None = None,
    hf_data_files: list[str] | None = None, hf_streaming: bool = False,
    workers: int | None = None, bpe_sample_mb: float = DEFAULT_BPE_SAMPLE_MB,
    skip_bad_files: bool = False, force: bool = False, progress: bool = True,
    replace: bool = True, context: int | None = None, shard_tokens: int = SHARD_TOKENS,
) -> PreparedData:
    """Tokenize a corpus into `out_dir` and open it, or reuse it if prepared the same way.

    Args:
        source: What to read; `sources.open_source` also explains `text_column`, the `hf_*`
            options and `skip_bad_files` (`hf_text_column` is `text_column`'s old name).
        tokenizer: `char`, `gpt2`, `bpe:N`, or a tokenizer to encode with as it is (a
            fine-tuned model keeps its own).
        out_dir: New, empty or gptscratch's own; default `default_prepared_dir(...)`.
        val_fraction: Share of the documents (of a one-document corpus: of its end) used for
            validation.
        workers: Tokenizer processes (default: every core this process may use).
        bpe_sample_mb: For `bpe:N`: the megabytes of training text the merges are learned from.
        force: Rebuild even if the folder holds the same data.
        replace: Whether other data prepared in `out_dir` may be replaced (not a run's own).
        context: The block size of the model the data is for: each split must be longer.
        shard_tokens: The most ids per token file.

    Raises:
        UserError: Bad options, an unreadable or empty input, splits too small, or an output
            folder that is not ours to write.
    """
    given = None if isinstance(tokenizer, str) else tokenizer
    spec = _spec_of(tokenizer)  # fail before reading anything
    _check_options(val_fraction, workers, bpe_sample_mb, shard_tokens)
    out = Path(out_dir) if out_dir is not None else default_prepared_dir(source, spec, hf_dataset)
    check_output_folder(out)
    started = time.perf_counter()
    src = open_source(source, text_column=hf_text_column or text_column, hf_dataset=hf_dataset,
                      hf_split=hf_split, hf_data_files=hf_data_files, hf_streaming=hf_streaming,
                      skip_bad_files=skip_bad_files)
    options: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "source_fingerprint": src.fingerprint,
        "tokenizer": spec, "val_fraction": val_fraction, "lowercase": lowercase}
    if given is not None:
        options["tokenizer_fingerprint"] = given.fingerprint()
    if spec.startswith("bpe") and given is None:
        options["bpe_sample_mb"] = bpe_sample_mb
    key = sha256_bytes(json.dumps(options, sort_keys=True).encode("utf-8"))
    existing = reusable_prepared(out, key, replace, force)
    if existing is not None:
        return existing
    tok = given or learn_tokenizer(spec, src, val_fraction, lowercase, bpe_sample_mb)
    meta = _write_folder(out, tok, src, {**options, "prepare_key": key}, context,
                         workers=workers or default_workers(), progress=progress,
                         shard_tokens=shard_tokens)
    _log_prepared(out, meta, time.perf_counter() - started)
    return PreparedData(dir=out, meta=meta, tokenizer=tok)


def _check_options(val_fraction: float, workers: int | None, bpe_sample_mb: float,
                   shard_tokens: int) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction ({val_fraction}) must be between 0 and 1 "
                        "(exclusive); try 0.1")
    cores = default_workers()
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or not 1 <= workers <= 4 * cores):
        raise UserError(f"workers ({workers!r}) must be a whole number from 1 to {4 * cores} "
                        f"(4 per core: more only costs memory); try --workers {cores}")
    if not 0 < bpe_sample_mb < float("inf"):
        raise UserError(f"bpe_sample ({bpe_sample_mb}) must be a positive number of "
                        "megabytes; try --bpe-sample 200")
    if shard_tokens < 1:
        raise UserError(f"shard_tokens ({shard_tokens}) must be >= 1")


def _spec_of(tokenizer: str | Tokenizer) -> str:
    """The tokenizer's spec (`char`, `gpt2`, `bpe:N`), checked; a given tokenizer's own."""
    if isinstance(tokenizer, str):
        kind, bpe_size = parse_tokenizer_spec(tokenizer)
    else:
        kind, bpe_size = tokenizer.kind, (tokenizer.vocab_size if tokenizer.kind == "bpe" else None)
    return kind if bpe_size is None else f"{kind}:{bpe_size}"


def reusable_prepared(out: Path, key: str, replace: bool, force: bool) -> PreparedData | None:
    """The folder's prepared data, if it was made from the same sources with the same options;
    a UserError if it holds other data and `replace` is off."""
    if not is_prepared_dir(out):
        return None
    try:
        existing = load_prepared(out)
    except UserError as exc:
        logger.info("rewriting %s: %s", out, exc)
        return None
    same = existing.meta.get("prepare_key") == key
    if not same and not replace:
        raise UserError(f"'{out}' holds the data this run was trained on "
                        f"({existing.meta.get('source', 'another corpus')}), not this "
                        "data; resume without --data, or start a new run with a new --out")
    if not same or force:
        return None
    logger.info("reusing prepared data in %s (same sources and options; --force rebuilds)", out)
    return existing


def learn_tokenizer(spec: str, src: Source, val_fraction: float, lowercase: bool,
                    bpe_sample_mb: float) -> Tokenizer:
    """Build the tokenizer `spec` names: `char` learns its vocabulary from a pass over every
    document; `bpe:N` learns its merges from the first `bpe_sample_mb` of training text."""
    if spec == "gpt2":
        return build_tokenizer(spec)
    seen = [0, 0]  # characters read; 1 once the stream has ended
    if spec == "char":
        texts = (t.lower() if lowercase else t for doc in src.documents() for t in doc.pieces)
    else:
        texts = (p.text.lower() if lowercase else p.text
                 for p in split_pieces(src, val_fraction) if not p.val)
    sample = _counted(texts, seen, None if spec == "char" else int(bpe_sample_mb * 2**20))
    try:
        if spec == "char":  # an end-of-text id only where there are documents to keep apart
            return CharTokenizer.from_text(sample, eot=not src.one_document)
        return build_tokenizer(spec, sample)
    except UserError:
        if seen == [0, 1]:
            raise UserError(f"{src.description} is empty; give text with some content") from None
        raise


def _counted(texts: Iterator[str], seen: list[int], limit: int | None) -> Iterator[str]:
    """The texts, counting their characters into `seen[0]`, until `limit` of them (if set);
    `seen[1]` becomes 1 when the texts ran out."""
    for text in texts:
        seen[0] += len(text)
        yield text
        if limit is not None and seen[0] >= limit:
            return
    seen[1] = 1


def _write_folder(out: Path, tok: Tokenizer, src: Source, options: dict[str, Any],
                  context: int | None, **settings: Any) -> dict[str, Any]:
    """Write the shards, the tokenizer and, last, `meta.json` (returned). A failure removes the
    token files (and the folder, if this call made it): nothing is left that looks prepared."""
    made = None  # the highest folder this call creates, if any
    if not out.exists():
        made = out
        while not made.parent.exists():
            made = made.parent
    start_writing(out)
    remove_leftovers(out)
    try:
        counts = _write_shards(out, tok, src, options["val_fraction"], options["lowercase"],
                               **settings)
        _check_splits(counts, options["val_fraction"], src, context)
        meta: dict[str, Any] = {
            **options, "tokenizer_kind": tok.kind, "tokenizer_fingerprint": tok.fingerprint(),
            "vocab_size": tok.vocab_size, "eot_id": tok.eot_id,
            "dtype": token_dtype(tok.vocab_size).name, **counts, "source": src.description,
        }
        write_meta(out, tok, meta)  # last: from here on the folder is prepared
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)  # made by this call, holds only its files
        else:
            remove_token_files(out)
        raise
    return meta


def _write_shards(out: Path, tok: Tokenizer, src: Source, val_fraction: float, lowercase: bool,
                  *, workers: int, progress: bool, shard_tokens: int) -> dict[str, Any]:
    """Encode the stream and write each split's shards; returns the counts for `meta.json`."""
    dtype = token_dtype(tok.vocab_size)
    counts = {f"{split}_{what}": 0 for split in ("train", "val") for what in ("bytes", "documents")}
    # Every id holds at least one byte of text, plus one end-of-text id per document.
    most = None if src.total_bytes is None else src.total_bytes + 1
    with (ShardWriter(out, "train", dtype, shard_tokens, most) as train,
          ShardWriter(out, "val", dtype, shard_tokens, most) as val,
          _progress_bar(src, progress) as bar):
        writers = {"train": train, "val": val}
        held: list[Encoded] = []  # the last document: it moves to val if val gets none

        def put(enc: Encoded, split: str) -> None:
            writers[split].write(enc.ids)
            counts[f"{split}_bytes"] += enc.num_bytes
            counts[f"{split}_documents"] += int(enc.end)

        stream = encode_stream(tok, split_pieces(src, val_fraction), workers=workers,
                               lowercase=lowercase)
        for enc in stream:
            bar.update(enc.num_bytes)
            if src.one_document:
                put(enc, "val" if enc.val else "train")
                continue
            if held and held[0].doc != enc.doc:
                for h in held:
                    put(h, "val" if h.val else "train")
                held = []
            held.append(enc)
            bar.set_postfix(documents=f"{enc.doc + 1:,}",
                            tokens=f"{train.tokens + val.tokens:,}", refresh=False)
        if held and train.tokens == val.tokens == 0:  # a stream of one document
            split_by_position(held, tok, val_fraction, writers, counts)
        else:
            for h in held:
                put(h, "val" if h.val or val.tokens == 0 else "train")
    return {**counts, "train_tokens": train.tokens, "val_tokens": val.tokens,
            "shards": {"train": train.shards, "val": val.shards}}


def is_val_document(number: int, val_fraction: float) -> bool:
    """Whether document `number` of a stream goes to validation: a hash of the number, so the
    choice is the same on every run and needs no knowledge of the stream's length."""
    digest = hashlib.blake2b(number.to_bytes(8, "little"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < val_fraction


def split_pieces(src: Source, val_fraction: float) -> Iterator[Piece]:
    """The corpus as pieces marked with their document and split: a document goes to
    validation by `is_val_document` (`prepare` moves the last one there if none did); a
    one-document corpus is cut by position: validation is its last `val_fraction`, from a
    line start."""
    if src.one_document:
        assert src.split_one is not None
        train, val = src.split_one(val_fraction)
        yield from _marked(train, 0, val=False, ends=False)
        yield from _marked(val, 0, val=True, ends=True)
        return
    for number, doc in enumerate(src.documents()):
        yield from _marked(doc.pieces, number, val=is_val_document(number, val_fraction), ends=True)


def _marked(pieces: Iterator[str], doc: int, *, val: bool, ends: bool) -> Iterator[Piece]:
    previous = next(pieces, None)
    first = True
    for text in pieces:
        yield Piece(doc, previous, False, val, first)  # type: ignore[arg-type]
        previous, first = text, False
    if previous is not None:
        yield Piece(doc, previous, ends, val, first)


def split_by_position(pieces: list[Encoded], tok: Tokenizer, val_fraction: float,
                       writers: dict[str, Any], counts: dict[str, Any]) -> None:
    """Split the ids of a stream's only document as one text is split: validation is its last
    `val_fraction`, from just after a token holding a line break."""
    ids = np.concatenate([p.ids for p in pieces])
    cut = max(1, int(len(ids) * (1.0 - val_fraction)))
    while cut < len(ids) and "\n" not in tok.decode([int(ids[cut - 1])]):
        cut += 1
    writers["train"].write(ids[:cut])
    writers["val"].write(ids[cut:])
    text_bytes = sum(p.num_bytes for p in pieces)
    eot = [] if tok.eot_id is None else [tok.eot_id]
    val_ids = ids[cut:].tolist()
    val_ids = val_ids[:-1] if eot and val_ids[-1:] == eot else val_ids
    counts["val_bytes"] = len(tok.decode(val_ids).encode("utf-8"))
    counts["train_bytes"] = text_bytes - counts["val_bytes"]
    counts["val_documents"] = 1


def _progress_bar(src: Source, progress: bool) -> tqdm[Any]:
    """Bytes of text read, with MB/s and, when the size is known in advance, an ETA."""
    return tqdm(total=src.total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                desc="preparing", disable=True if not progress else None, mininterval=0.5)


def _check_splits(counts: dict[str, Any], val_fraction: float, src: Source,
                  context: int | None) -> None:
    train, val = counts["train_tokens"], counts["val_tokens"]
    if train + val == 0:
        raise UserError(f"{src.description} is empty; give text with some content")
    if not src.one_document and (train == 0 or val == 0):
        raise UserError(f"{src.description} holds one document, which cannot be both the "
                        "training and the validation split; give more documents, or the text "
                        "as one file (which is split by position)")
    if val == 0:
        raise UserError(f"the validation split is empty (the last {val_fraction:.0%} of the "
                        "text has no line break to cut at); lower --val-fraction or give more "
                        "text")
    if train < 2 or val < 1:
        raise UserError(f"splits too small ({train} train and {val} validation tokens); "
                        "lower --val-fraction or give more text")
    if context is not None:
        check_context_fits(train, val, context)


def _log_prepared(out: Path, meta: dict[str, Any], seconds: float) -> None:
    tokens = meta["train_tokens"] + meta["val_tokens"]
    documents = meta["train_documents"] + meta["val_documents"]
    logger.info(
        "prepared %s: %s train + %s val tokens from %s document%s (%s, vocabulary %s, "
        "%.2f bytes/token) in %.1f s",
        out, f"{meta['train_tokens']:,}", f"{meta['val_tokens']:,}", f"{documents:,}",
        "s" if documents != 1 else "", meta["tokenizer"],
        f"{meta['vocab_size']:,}", (meta["train_bytes"] + meta["val_bytes"]) / tokens, seconds,
    )  # fmt: skip
