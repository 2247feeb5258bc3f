"""A corpus of files: which files a folder or glob holds, what each one is by its name, its
fingerprint, and its documents.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from gptscratch.data.sources.base import Document, Source
from gptscratch.data.sources.text import NotUtf8, decode_utf8, open_bytes, split_file, text_pieces
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
    return any(name.endswith(s + c) for s in FOLDER_SUFFIXES for c in ("", *COMPRESSED_SUFFIXES))


def files_source(files: list[Path], what: str, column: str, skip_bad: bool) -> Source:
    """The files as a source (text and JSON may be `.gz`, `.zst`): one document per text file
    (`.txt`, `.md`, any glob match), per JSON line or array element, per parquet row."""
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
                yield Document(str(path), itertools.chain([first], pieces))
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


def json_documents(path: Path, compression: str | None, column: str) -> Iterator[Document]:
    """One document per JSON line (or per element of a file that is one JSON array)."""
    with open_bytes(path, compression) as f:
        head = f.peek(64) if isinstance(f, io.BufferedReader) else b""
        records = (enumerate(_load_json_array(f, path, compression), 1)
                   if head.lstrip()[:1] == b"[" else _json_lines(f, path, compression))
        yield from _records(records, path, column)


def _load_json_array(f: IO[bytes], path: Path, compression: str | None) -> list[Any]:
    data = f.read()
    text = decode_utf8(data, path, 0, compression)
    try:
        records = json.loads(text)
    except ValueError as exc:
        raise UserError(f"'{path}' is not valid JSON ({exc}); give JSON lines or one JSON "
                        "array of objects") from None
    if not isinstance(records, list):
        raise UserError(f"'{path}' holds a JSON {type(records).__name__}, not an array of "
                        "objects or JSON lines")
    return records


def _json_lines(f: IO[bytes], path: Path, compression: str | None) -> Iterator[tuple[int, Any]]:
    offset = 0
    for lineno, raw in enumerate(f, 1):
        line = decode_utf8(raw, path, offset, compression)
        offset += len(raw)
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except ValueError as exc:
            raise UserError(f"{path}:{lineno} is not JSON ({exc}); each line of a .jsonl file "
                            "must be one JSON object") from None


def _records(records: Iterator[tuple[int, Any]], path: Path, column: str) -> Iterator[Document]:
    for number, record in records:
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number} is a JSON {type(record).__name__}, not an object "
                            f"with a '{column}' field")
        if column not in record:
            fields = ", ".join(list(record)[:20]) or "none"
            raise UserError(f"{path}:{number} has no '{column}' field; its fields are: {fields} "
                            "(choose one with --text-column)")
        text = record[column]
        if isinstance(text, str) and text.strip():
            yield Document.from_text(f"{path}:{number}", text)


def parquet_documents(path: Path, column: str) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise UserError("reading .parquet files needs pyarrow; run: pip install -c "
                        "constraints.txt -e '.[hf]'") from exc
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends for a bad file
        raise UserError(f"'{path}' is not a readable parquet file ({exc}); check it") from None
    names = table.schema_arrow.names
    if column not in names:
        raise UserError(f"'{path}' has no column '{column}'; its columns are: "
                        f"{', '.join(names)} (choose one with --text-column)")
    row = 0
    for batch in table.iter_batches(batch_size=1024, columns=[column]):
        for text in batch.column(0).to_pylist():
            row += 1
            if isinstance(text, str) and text.strip():
                yield Document.from_text(f"{path} row {row}", text)
