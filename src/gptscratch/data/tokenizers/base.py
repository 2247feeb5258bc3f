"""What every tokenizer is: the protocol, the end-of-text token, and newline-safe splitting.

A tokenizer turns text into token ids and back, and describes itself as a JSON-able dict
(`to_dict`) whose hash (`fingerprint`) tells whether two tokenizers give the same ids. The
kinds (`char.py`, `gpt2.py`, `trained_bpe.py`) subclass the protocol for its shared methods.
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
        """The sha256 hex digest of the canonical JSON form of `to_dict()`."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)
        return sha256_bytes(canonical.encode("utf-8"))


def split_for_encoding(text: str, target_chars: int) -> list[str]:
    """Cut `text` into pieces of about `target_chars` that encode exactly like the whole.

    Cuts fall only at the end of a non-blank line, just before its line break, so
    `concat(encode(p) for p in pieces) == encode(text)` for GPT-2-style byte-level BPE.
    A piece may be longer than `target_chars` when no line break is near.

    Args:
        text: Text to cut.
        target_chars: Rough piece length in characters.

    Returns:
        The pieces, in order; `"".join(pieces) == text`. Empty text gives `[]`.
    """
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
