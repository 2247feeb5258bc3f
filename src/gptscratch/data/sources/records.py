"""Documents from records: JSON lines (or one JSON array) and parquet rows, one per record."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from gptscratch.data.sources.base import PIECE_CHARS, Document
from gptscratch.data.sources.text import decode_utf8, open_bytes
from gptscratch.data.tokenizers.base import split_for_encoding
from gptscratch.errors import UserError


def json_documents(path: Path, compression: str | None, column: str) -> Iterator[Document]:
    """One document per JSON line (or per element of a file that is one JSON array)."""
    with open_bytes(path, compression) as f:
        head = f.peek(64) if isinstance(f, io.BufferedReader) else b""
        if head.lstrip()[:1] == b"[":
            records = _load_json_array(f, path, compression)
            yield from _records(((i, r) for i, r in enumerate(records, 1)), path, column, "item")
            return
        yield from _records(_json_lines(f, path, compression), path, column, "line")


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


def _records(records: Iterator[tuple[int, Any]], path: Path, column: str,
             unit: str) -> Iterator[Document]:
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
            yield Document(f"{path}:{number}", iter(split_for_encoding(text, PIECE_CHARS)))


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
                yield Document(f"{path} row {row}", iter(split_for_encoding(text, PIECE_CHARS)))
