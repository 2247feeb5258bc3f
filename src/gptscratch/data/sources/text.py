"""Reading a text file (gzip or zstandard too) as UTF-8 pieces in bounded memory, for the file
sources of `files.py`.
"""

from __future__ import annotations

import codecs
import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from gptscratch.data.sources.base import PIECE_CHARS
from gptscratch.data.tokenizers.base import SAFE_CUT
from gptscratch.errors import UserError

_READ_BYTES = 1 << 20


def open_bytes(path: Path, compression: str | None) -> IO[bytes]:
    """Open a file for reading bytes, decompressing gzip or zstandard on the fly."""
    try:
        if compression == "gz":
            return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
        raw = open(path, "rb")
    except OSError as exc:
        raise UserError(f"cannot read input file '{path}' ({exc.strerror}); check it") from exc
    if compression != "zst":
        return raw
    try:
        import zstandard
    except ImportError as exc:
        raw.close()
        raise UserError(f"'{path}' is zstandard-compressed and the zstandard package is not "
                        "installed; run: pip install zstandard") from exc
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))


class NotUtf8(OSError):
    """A file's bytes are not UTF-8 (the message names the file and the byte offset)."""


def decode_utf8(data: bytes, path: Path, offset: int, compression: str | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = "uncompressed byte offset" if compression else "byte offset"
        raise NotUtf8(f"input file '{path}' is not valid UTF-8 (bad byte at {where} "
                       f"{offset + exc.start})") from None


def text_pieces(path: Path, compression: str | None, start: int = 0,
                 end: int | None = None) -> Iterator[str]:
    """A text file's contents (bytes `start` to `end`) as pieces of about `PIECE_CHARS`, cut at
    safe places. Bytes are decoded as UTF-8 a line-aligned block at a time, so an error names
    the exact offset; a byte-order mark at the start of the file is dropped."""
    with open_bytes(path, compression) as f:
        if start and compression is None:
            f.seek(start)
        elif start:
            _skip(f, start)
        offset, pending, text = start, b"", ""
        while True:
            want = _READ_BYTES if end is None else min(_READ_BYTES, end - offset - len(pending))
            chunk = f.read(want) if want > 0 else b""
            data = pending + chunk
            if offset == 0 and data.startswith(codecs.BOM_UTF8):
                data, offset = data[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            if chunk and cut == 0 and len(data) >= 64 * _READ_BYTES:
                cut = _char_start(data, len(data) - 4)  # a line of 64 MB: cut it anyway
            text += decode_utf8(data[:cut], path, offset, compression)
            offset, pending = offset + cut, data[cut:]
            if not chunk:
                if text:
                    yield text
                return
            keep = _last_safe_cut(text) if len(text) >= PIECE_CHARS else 0
            if keep:
                yield text[:keep]
                text = text[keep:]


def _char_start(data: bytes, i: int) -> int:
    """The nearest index at or before `i` where a UTF-8 character starts."""
    while i > 0 and (data[i] & 0xC0) == 0x80:
        i -= 1
    return i


def _last_safe_cut(text: str) -> int:
    """Where the text may be cut near its end (after the last non-space character followed by
    a line break), or 0 when it has no such place."""
    look = 4096
    while True:
        start = max(0, len(text) - look)
        last = None
        for last in SAFE_CUT.finditer(text, start):  # noqa: B007  (the last one is wanted)
            pass
        if last is not None:
            return last.end()
        if start == 0:
            return 0
        look *= 16


def split_file(path: Path, compression: str | None,
               val_fraction: float) -> tuple[Iterator[str], Iterator[str]]:
    """Cut one text file into train (its start) and val (the last `val_fraction` of its bytes,
    from the first line start at or after that point)."""
    size = path.stat().st_size if compression is None else _uncompressed_size(path, compression)
    exact = int(size * (1.0 - val_fraction))
    cut = max(exact - 1, 0)
    with open_bytes(path, compression) as f:
        if compression is None:
            f.seek(cut)
        else:
            _skip(f, cut)
        while True:
            block = f.read(_READ_BYTES)
            newline = block.find(b"\n")
            if not block:
                cut = size
                break
            if newline >= 0:
                cut += newline + 1
                break
            cut += len(block)
    return text_pieces(path, compression, 0, cut), text_pieces(path, compression, cut, None)


def _uncompressed_size(path: Path, compression: str) -> int:
    with open_bytes(path, compression) as f:
        return _skip(f, None)


def _skip(f: IO[bytes], n: int | None) -> int:
    """Read and drop `n` bytes (all, if None); return how many were read."""
    done = 0
    while n is None or done < n:
        block = f.read(_READ_BYTES if n is None else min(_READ_BYTES, n - done))
        if not block:
            break
        done += len(block)
    return done
