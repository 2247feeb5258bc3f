"""What a source of training text is: a stream of `Document`s, each a stream of text pieces,
built by `sources.open_source` and read by `prepare`.
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
    """One document: `name` says where it is, for messages (a file, `file:line`, a dataset
    row); `pieces` is its text in pieces of about `PIECE_CHARS` characters, which encoded one
    by one give exactly the ids of encoding their concatenation (`split_for_encoding`)."""

    name: str
    pieces: Iterator[str]

    @classmethod
    def from_text(cls, name: str, text: str) -> Document:
        """A document whose whole text is already in memory (a record, a row, the plays)."""
        return cls(name, iter(split_for_encoding(text, PIECE_CHARS)))


@dataclass
class Source:
    """A corpus to stream.

    Attributes:
        description: What it is, for `meta.json` and messages.
        fingerprint: JSON-able; changes when the corpus does, made without reading it all.
        total_bytes: The size to read, where known in advance (compressed files: compressed);
            None for a dataset.
        one_document: A single document (one text file, the built-in plays), which `prepare`
            splits by position.
        documents: Starts a new pass over the documents.
        split_one: For one document: the (train, val) piece streams for a validation
            fraction, cut at a line start.
    """

    description: str
    fingerprint: dict[str, Any]
    total_bytes: int | None
    one_document: bool
    documents: Callable[[], Iterator[Document]]
    split_one: Callable[[float], tuple[Iterator[str], Iterator[str]]] | None = field(
        default=None, repr=False)
