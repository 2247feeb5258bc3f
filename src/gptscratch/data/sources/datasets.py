"""A Hugging Face dataset as a source: its split's rows, streamed, one document per row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gptscratch.data.sources.base import Document, Source
from gptscratch.data.sources.files import file_fingerprint
from gptscratch.errors import UserError
from gptscratch.hub import go_offline_if_unreachable, hub_offline

# Dataset builders that ship inside `datasets` and only read local files.
_LOCAL_BUILDERS = frozenset({"text", "json", "csv", "parquet", "arrow", "pandas"})


def dataset_source(name: str, split: str, column: str, data_files: list[str] | None,
                    streaming: bool) -> Source:
    """A Hugging Face dataset's split, streamed row by row (`streaming=True` never downloads
    the whole of a hub dataset; local builders stream their files)."""
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
    columns = ds.column_names or []
    if columns and column not in columns:
        raise UserError(_no_column(name, column, columns))
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
