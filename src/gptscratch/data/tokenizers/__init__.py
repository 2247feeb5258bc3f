"""Text to token ids and back: the tokenizers by name (`char`, `gpt2`, `bpe:N`) behind one
protocol (`base.py`). `prepare` builds one from its spec and saves it beside the token files;
generation, evaluation and checkpoints rebuild it offline from that saved form.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gptscratch.data.tokenizers.base import EOT, Tokenizer, split_for_encoding
from gptscratch.data.tokenizers.char import CharTokenizer
from gptscratch.data.tokenizers.chat_template import (
    ChatTemplate,
    ChatTokenizer,
    chat_template_of,
    with_chat_template,
)
from gptscratch.data.tokenizers.gpt2 import GPT2Tokenizer, gpt2_hf_tokenizer
from gptscratch.data.tokenizers.trained_bpe import BPETokenizer
from gptscratch.errors import UserError, did_you_mean
from gptscratch.files import atomic_file

__all__ = ["EOT", "Tokenizer", "split_for_encoding", "CharTokenizer", "GPT2Tokenizer",
           "gpt2_hf_tokenizer", "BPETokenizer", "ChatTemplate", "ChatTokenizer",
           "chat_template_of", "with_chat_template", "build_tokenizer", "load_tokenizer",
           "parse_tokenizer_spec", "save_tokenizer", "tokenizer_from_dict"]

# The one list of kinds; each class rebuilds itself from its `to_dict()` form.
KINDS: dict[str, type[CharTokenizer] | type[GPT2Tokenizer] | type[BPETokenizer]] = {
    "char": CharTokenizer, "gpt2": GPT2Tokenizer, "bpe": BPETokenizer}
SPEC_CHOICES = "char, gpt2, bpe:N (e.g. bpe:8000)"
BPE_MIN_VOCAB = 257  # 256 byte tokens + <|endoftext|>: anything smaller learns no merge
BPE_MAX_VOCAB = 1_000_000


def parse_tokenizer_spec(spec: str) -> tuple[str, int | None]:
    """Split a tokenizer spec into (kind, bpe vocab size or None); a UserError if it is bad."""
    kind, _, size = spec.strip().lower().partition(":")
    if kind in ("char", "gpt2") and not size:
        return kind, None
    if kind != "bpe":
        hint = did_you_mean(spec.strip().lower(), ["char", "gpt2", "bpe:8000"])
        raise UserError(f"unknown tokenizer '{spec}'{hint}; choose one of: {SPEC_CHOICES}")
    try:
        n = int(size)
    except ValueError:
        raise UserError(f"tokenizer '{spec}' needs a whole-number vocabulary size, "
                        "e.g. bpe:8000") from None
    if not BPE_MIN_VOCAB <= n <= BPE_MAX_VOCAB:
        raise UserError(f"tokenizer '{spec}': the vocabulary size must be between "
                        f"{BPE_MIN_VOCAB} and {BPE_MAX_VOCAB:,}; try bpe:8000")
    return kind, n


def build_tokenizer(spec: str, text: str | Iterable[str] | None = None) -> Tokenizer:
    """Build the tokenizer `spec` names; `char` learns its vocabulary and `bpe:N` its merges
    from `text` (a string or a stream of pieces)."""
    kind, n = parse_tokenizer_spec(spec)
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "char":
        return CharTokenizer.from_text(text or "")
    assert n is not None
    return BPETokenizer.train(text or "", n)


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from its `to_dict()` form, offline (a UserError if it is not one);
    a `chat_template` entry adds its template, of either style (`ChatTokenizer`)."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if not isinstance(kind, str) or kind not in KINDS:
        raise UserError(f"unknown saved tokenizer kind {kind!r}; expected char, gpt2 or bpe")
    if "chat_template" in d:
        base = {k: v for k, v in d.items() if k != "chat_template"}
        return ChatTokenizer(tokenizer_from_dict(base), ChatTemplate.from_dict(d["chat_template"]))
    try:
        return KINDS[kind].from_dict(d)
    except UserError:
        raise
    except Exception as exc:  # tokenizers.from_str raises a bare Exception on bad JSON
        raise UserError(f"saved {kind} tokenizer is damaged ({type(exc).__name__}); "
                        "prepare the data again") from exc


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    """Write `tok.to_dict()` as JSON to `path`, atomically."""
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(json.dumps(tok.to_dict(), ensure_ascii=False) + "\n", encoding="utf-8")


def load_tokenizer(path: Path) -> Tokenizer:
    """Read a tokenizer saved by `save_tokenizer` (a UserError if missing or damaged)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"tokenizer file '{path}' not found; prepare the data again") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"tokenizer file '{path}' is unreadable ({exc}); "
                        "prepare the data again") from exc
    return tokenizer_from_dict(d)
