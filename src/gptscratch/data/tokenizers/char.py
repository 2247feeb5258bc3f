"""The `char` tokenizer: one id per character of the corpus. The simplest, and the one the
`shakespeare-char` preset learns from: every id is a character a learner can read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gptscratch.data.tokenizers.base import EOT, Tokenizer
from gptscratch.errors import UserError


class CharTokenizer(Tokenizer):
    """One id per character; the vocabulary is the sorted set of the corpus characters, then
    `<|endoftext|>` (id `len(chars)`) when `eot` is set: a corpus of several documents."""

    kind = "char"

    def __init__(self, chars: Sequence[str], eot: bool = False) -> None:
        """Build from the vocabulary, which must be distinct single characters in sorted order."""
        self._chars = list(chars)
        self._eot = eot
        if not self._chars or any(len(c) != 1 for c in self._chars):
            raise UserError("a char vocabulary needs at least one single-character entry")
        if self._chars != sorted(set(self._chars)):
            raise UserError("a char vocabulary must be sorted and without repeats")
        self._codepoints = np.array([ord(c) for c in self._chars], dtype=np.uint32)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        """Rebuild from `to_dict()`'s form."""
        eot = d.get("eot", False)
        if not isinstance(eot, bool):
            raise UserError(f"a saved char tokenizer's 'eot' must be true or false, not {eot!r}")
        return cls(d["chars"], eot=eot)

    @classmethod
    def from_text(cls, text: str | Iterable[str], eot: bool = False) -> CharTokenizer:
        """Build the vocabulary from every character in `text` (a string, or a stream of
        pieces), plus `<|endoftext|>` if `eot`."""
        chars: set[str] = set()
        for piece in [text] if isinstance(text, str) else text:
            chars.update(piece)
        if not chars:
            raise UserError("the char tokenizer needs training text; give a non-empty input")
        return cls(sorted(chars), eot=eot)

    @property
    def vocab_size(self) -> int:
        return len(self._chars) + self._eot

    @property
    def eot_id(self) -> int | None:
        return len(self._chars) if self._eot else None

    def encode_array(self, text: str) -> np.ndarray:
        """Encode `text` to an int32 array of shape (len(text),)."""
        # UTF-32 gives one uint32 code point per character; the vocabulary is sorted by code
        # point, so a binary search finds every id at once.
        codepoints = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        ids = np.searchsorted(self._codepoints, codepoints)
        unknown = self._codepoints[np.minimum(ids, len(self._chars) - 1)] != codepoints
        if unknown.any():
            seen = dict.fromkeys(chr(c) for c in codepoints[unknown].tolist())
            shown = ", ".join(repr(c) for c in list(seen)[:10])
            more = f" and {len(seen) - 10} more" if len(seen) > 10 else ""
            raise UserError(f"text has characters outside the char vocabulary: {shown}{more}; "
                            f"the model was trained on a char vocabulary of {len(self._chars)} "
                            "characters, so remove them or use a BPE tokenizer (gpt2 or bpe:N)")
        return ids.astype(np.int32)

    def decode(self, ids: Sequence[int]) -> str:
        n = len(self._chars)
        return "".join(self._chars[i] if i != n else EOT for i in ids)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "chars": list(self._chars)}
        if self._eot:  # absent otherwise: older vocabularies keep their fingerprint
            d["eot"] = True
        return d
