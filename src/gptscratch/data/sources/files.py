"""A corpus of files: which files a folder or glob holds, what each one is by its name, its
fingerprint, and its documents (`text.py` for text, `records.py` for JSON lines and parquet).
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gptscratch.data.sources.base import Document, Source
from gptscratch.data.sources.records import json_documents, parquet_documents
from gptscratch.data.sources.text import NotUtf8, split_file, text_pieces
from gptscratch.errors import UserError
from gptscratch.files import sha256_bytes

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md")
JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
COMPRESSED_SUFFIXES = (".gz", ".zst")
# What a folder is searched for (a glob takes whatever it matches).
FOLDER_SUFFIXES = TEXT_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES
_SAMPLE_BYTES = 1 << 16  # read from each end of a file for its fingerprint


def _kind(path: Path) -> tuple[str, str | None]:
    """(`text` | `json` | `parquet`, compression `gz` | `zst` | None) from the file's name."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    compression = None
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        compression = suffixes.pop()[1:]
    last = suffixes[-1] if suffixes else ""
    if last in JSON_SUFFIXES:
        return "json", compression
    if last in PARQUET_SUFFIXES:
        return "parquet", compression
    return "text", compression


def readable_kind(path: Path) -> bool:
    """Whether a folder's file is one gptscratch reads (by its name)."""
    name = path.name.lower()
    for c in ("",) + COMPRESSED_SUFFIXES:
        if any(name.endswith(s + c) for s in FOLDER_SUFFIXES):
            return True
    return False


def files_source(files: list[Path], what: str, column: str, skip_bad: bool) -> Source:
    """The files as a source: one document per text file, per JSON record, per parquet row."""
    sizes = []
    for p in files:
        try:
            sizes.append(p.stat().st_size)
        except OSError as exc:
            raise UserError(f"cannot read input file '{p}' ({exc.strerror}); check it") from exc
        if _kind(p)[0] == "parquet" and _kind(p)[1] is not None:
            raise UserError(f"'{p}' is a compressed parquet file; parquet compresses "
                            "itself, give the .parquet file")
    one = len(files) == 1 and _kind(files[0])[0] == "text"
    plural = "s" if len(files) > 1 else ""
    description = (f"{len(files)} file{plural} from {what}"
                   if len(files) > 1 or what.startswith(("folder", "glob")) else f"input {what}")
    skipped: list[str] = []

    def documents() -> Iterator[Document]:
        if skipped:  # said on the first pass over the files
            skip_bad_quietly = set(skipped)
            yield from (d for p in files if str(p) not in skip_bad_quietly
                        for d in _file_documents(p, column, skip_bad, []))
            return
        for p in files:
            yield from _file_documents(p, column, skip_bad, skipped)
        if skipped:
            logger.warning("skipped %d file%s that %s not UTF-8: %s", len(skipped),
                           "s" if len(skipped) > 1 else "", "are" if len(skipped) > 1 else "is",
                           ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))

    return Source(
        description=description,
        fingerprint={"files": [file_fingerprint(p) for p in files], "column": column,
                     "skip_bad_files": skip_bad},
        # Known in advance only for plain text: the bar counts the text read, not the file.
        total_bytes=sum(sizes) if all(_kind(p) == ("text", None) for p in files) else None,
        one_document=one, documents=documents,
        split_one=(lambda f: split_file(files[0], _kind(files[0])[1], f)) if one else None,
    )


def file_fingerprint(path: Path) -> list[Any]:
    """[resolved path, size, mtime in ns, sha256 of the first and last 64 kB]."""
    st = path.stat()
    with open(path, "rb") as f:
        head = f.read(_SAMPLE_BYTES)
        f.seek(max(0, st.st_size - _SAMPLE_BYTES))
        tail = f.read(_SAMPLE_BYTES)
    return [str(path.resolve()), st.st_size, st.st_mtime_ns, sha256_bytes(head + tail)[:16]]


def _file_documents(path: Path, column: str, skip_bad: bool,
                    skipped: list[str]) -> Iterator[Document]:
    kind, compression = _kind(path)
    try:
        if kind == "text":
            pieces = _guarded(text_pieces(path, compression), path, skip_bad, skipped)
            first = next(pieces, None)  # the first megabyte: a bad file fails here, early
            if first is not None:
                yield Document(str(path), _chain(first, pieces))
        elif kind == "json":
            yield from json_documents(path, compression, column)
        else:
            yield from parquet_documents(path, column)
    except NotUtf8 as exc:
        if not skip_bad:
            raise UserError(_not_utf8(exc)) from None
        logger.warning("skipping %s", exc)
        skipped.append(str(path))
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"cannot read input file '{path}' ({exc}); check it") from exc


def _guarded(pieces: Iterator[str], path: Path, skip_bad: bool,
             skipped: list[str]) -> Iterator[str]:
    """A text file's pieces; an error after the first one (the file is read as it streams)
    becomes a one-line UserError, or with `skip_bad` ends the document where it happened."""
    started = False
    try:
        for piece in pieces:
            started = True
            yield piece
    except NotUtf8 as exc:
        if not started:
            raise  # before any text: the caller skips the whole file, or stops
        if not skip_bad:
            raise UserError(_not_utf8(exc)) from None
        logger.warning("%s: kept the text before it, skipped the rest of the file", exc)
        skipped.append(str(path))
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"cannot read input file '{path}' ({exc}); check it") from exc


def _not_utf8(exc: NotUtf8) -> str:
    return (f"{exc}; convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8) or pass "
            "--skip-bad-files to leave such files out")


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest
