"""What a source of training text is: a stream of `Document`s, each a stream of text pieces.

`sources.open_source` builds a `Source` (from files: `files.py`, `text.py`; from a Hugging Face
dataset: `datasets.py`); `prepare` reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gptscratch.data.tokenizers.base import split_for_encoding

BUILTIN_SOURCE = "shakespeare"
DOCUMENT_SEPARATOR = "\n\n"  # joins documents in `read_text_source`
PIECE_CHARS = 1_000_000  # the size of the pieces a document's text comes in


@dataclass
class Document:
    """One document of a corpus: where it came from, and its text in order, in pieces.

    Attributes:
        name: Where it is, for messages: a file, `file:line`, or a dataset row.
        pieces: Its text, in pieces of about `PIECE_CHARS` characters; encoding them one by
            one gives exactly the ids of encoding their concatenation.
    """

    name: str
    pieces: Iterator[str]

    @classmethod
    def from_text(cls, name: str, text: str) -> Document:
        """A document whose whole text is already in memory (a record, a row, the plays)."""
        return cls(name, iter(split_for_encoding(text, PIECE_CHARS)))


@dataclass
class Source:
    """A corpus to stream: its documents, a description, and a cheap fingerprint.

    Attributes:
        description: What it is, for `meta.json` and messages.
        fingerprint: A JSON-able description that changes when the corpus does, made without
            reading it all (file sizes, modification times and a hash of each file's ends).
        total_bytes: The size of the text to read, when it is known in advance (the
            compressed size for compressed files); None for a dataset.
        one_document: Whether the corpus is a single document (one text file, or the built-in
            plays), which `prepare` splits by position instead of document by document.
        documents: A function that starts a new pass over the documents.
        split_one: For a single document: a function of the validation fraction that
            returns the (train, val) piece streams, cut at a line boundary.
    """

    description: str
    fingerprint: dict[str, Any]
    total_bytes: int | None
    one_document: bool
    documents: Callable[[], Iterator[Document]]
    split_one: Callable[[float], tuple[Iterator[str], Iterator[str]]] | None = field(
        default=None, repr=False)
