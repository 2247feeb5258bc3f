"""What every tokenizer is: the protocol, the end-of-text token, and newline-safe splitting,
shared by the kinds (`char.py`, `gpt2.py`, `trained_bpe.py`), which subclass the protocol.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from gptscratch.files import sha256_bytes

EOT = "<|endoftext|>"
# The last character of a line (before "\n" or "\r\n"). GPT-2's pre-tokenizer regex never
# joins a non-space character with the whitespace after it, and it looks only forward, so a
# cut there splits the text exactly where whole-text pre-tokenization would.
SAFE_CUT = re.compile(r"\S(?=[\r\n])")


class Tokenizer(Protocol):
    """What every tokenizer offers: ids for text, text for ids, and a portable description."""

    kind: str  # "char" | "gpt2" | "bpe"

    @property
    def vocab_size(self) -> int: ...

    @property
    def eot_id(self) -> int | None: ...

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.encode_array(text).tolist()
        return ids

    def encode_array(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def fingerprint(self) -> str:
        """sha256 of `to_dict()`'s canonical JSON: equal when two tokenizers give the same ids."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)
        return sha256_bytes(canonical.encode("utf-8"))


def split_for_encoding(text: str, target_chars: int) -> list[str]:
    """Cut `text` into pieces of about `target_chars` (longer where no line break is near)
    that encode exactly like the whole: cuts fall only at the end of a non-blank line, before
    its break, so `concat(encode(p) for p in pieces) == encode(text)` for GPT-2-style
    byte-level BPE. `"".join(pieces) == text`; empty text gives `[]`."""
    pieces: list[str] = []
    start = 0
    while len(text) - start > target_chars:
        cut = SAFE_CUT.search(text, start + target_chars)
        if cut is None:
            break
        pieces.append(text[start : cut.end()])
        start = cut.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces
