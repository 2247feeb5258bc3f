"""Which split each piece of a corpus goes to: the documents of a stream by a hash of their
number, a one-document corpus by position (see `prepare` for the whole rule).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from gptscratch.data.encode import Encoded, Piece
from gptscratch.data.sources import Source
from gptscratch.data.tokenizers import Tokenizer


def is_val_document(number: int, val_fraction: float) -> bool:
    """Whether document `number` of a stream goes to validation: a hash of the number, so the
    choice is the same on every run and needs no knowledge of the stream's length."""
    digest = hashlib.blake2b(number.to_bytes(8, "little"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < val_fraction


def split_pieces(src: Source, val_fraction: float) -> Iterator[Piece]:
    """The corpus as pieces marked with their document and split (see the module docstring)."""
    if src.one_document:
        assert src.split_one is not None
        train, val = src.split_one(val_fraction)
        yield from _marked(train, 0, val=False, ends=False)
        yield from _marked(val, 0, val=True, ends=True)
        return
    for number, doc in enumerate(src.documents()):
        yield from _marked(doc.pieces, number, val=is_val_document(number, val_fraction),
                           ends=True)


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
