"""Tokenizers: round trips, GPT-2 ids against Hugging Face (the oracle), BPE training, specs."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import PLAYS

from gptscratch.data.tokenizers import (
    build_tokenizer,
    gpt2_hf_tokenizer,
    load_tokenizer,
    parse_tokenizer_spec,
    save_tokenizer,
    split_for_encoding,
    tokenizer_from_dict,
)
from gptscratch.data.tokenizers.trained_bpe import BPETokenizer
from gptscratch.errors import UserError


def synthetic_text(n_words: int = 20_000, seed: int = 0) -> str:
    """Many scripts, emoji and every kind of whitespace run, in a reproducible jumble."""
    words = [
        "hello", "I'll", "we've", "don't", "naïve", "café", "Ünïcödé", "Привет", "мир",
        "Γειά", "σου", "مرحبا", "नमस्ते", "こんにちは", "カタカナ", "世界", "안녕하세요",
        "🌍", "🚀🚀", "👩‍💻", "3.14159", "2026", "x_y", "def", "f(x):", "return", "{}", "<|eot|>",
        "ﬁ", "Å", "\u00a0", "\u3000", "\u200b", "\u00ad", "ß", "İ",
    ]  # fmt: skip
    seps = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\n  ", "", " " * 17, "\t \t"]
    rng = random.Random(seed)
    return "".join(rng.choice(words) + rng.choice(seps) for _ in range(n_words))


VARIED = [
    "",
    " ",
    "Hello world",
    "  hello  world  \n\n\n",
    "def f(x):\n    return x  # trailing   \n\tpass\r\n",
    "こんにちは世界 🌍🚀 naïve café Ünïcödé",
    "I'll we've they're 12345 3.14 $100",
    "\u00a0\u3000\u200b zero-width and NBSP",
    synthetic_text(2_000),
]


# --- char ---------------------------------------------------------------------------------


def test_char_round_trip_and_vocab() -> None:
    text = "hello wörld 🌍\n"
    tok = build_tokenizer("char", text)
    assert tok.kind == "char" and tok.eot_id is None
    assert tok.vocab_size == len(set(text))
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("lo") == [sorted(set(text)).index("l"), sorted(set(text)).index("o")]
    arr = tok.encode_array(text)
    assert arr.dtype.itemsize <= 8 and arr.tolist() == tok.encode(text)


def test_char_unknown_characters_are_named() -> None:
    tok = build_tokenizer("char", "abc")
    with pytest.raises(UserError) as info:
        tok.encode("abz€z")
    message = str(info.value)
    assert "'z'" in message and "'€'" in message
    assert "char vocabulary of 3 characters" in message and "BPE" in message
    assert "\n" not in message


def test_char_needs_text() -> None:
    with pytest.raises(UserError, match="training text"):
        build_tokenizer("char")


# --- gpt2 ---------------------------------------------------------------------------------


def test_gpt2_known_ids() -> None:
    tok = build_tokenizer("gpt2")
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.vocab_size == 50257 and tok.eot_id == 50256
    # A literal <|endoftext|> in the corpus is ordinary text, never the special id.
    assert 50256 not in tok.encode("a<|endoftext|>b")
    assert tok.decode([15496, 50256]) == "Hello<|endoftext|>"


@pytest.mark.parametrize("spec", ["char", "gpt2"])
def test_round_trip_is_exact(spec: str) -> None:
    for text in VARIED:
        tok = build_tokenizer(spec, text or "x")
        assert tok.decode(tok.encode(text)) == text


def test_gpt2_bulk_path_equals_plain_encode() -> None:
    tok = build_tokenizer("gpt2")
    text = synthetic_text(150_000, seed=1)  # > 256k chars, so several threaded pieces
    assert len(split_for_encoding(text, 256_000)) > 1
    arr = tok.encode_array(text)
    assert arr.dtype in (np.int32, np.int64) and arr.tolist() == tok.encode(text)


def _oracle_corpus(shakespeare: str) -> list[str]:
    """A few MB of varied text, as documents of up to 200 lines."""
    parts = [shakespeare[: len(shakespeare) // 2], synthetic_text(60_000, seed=2)]
    parts.append(PLAYS.read_text(encoding="utf-8"))
    stdlib = sorted(Path(os.__file__).parent.glob("*.py"))
    parts.append("".join(p.read_text(encoding="utf-8") for p in stdlib[:60]))
    docs = []
    for part in parts:
        lines = part.splitlines(keepends=True)
        docs += ["".join(lines[i : i + 200]) for i in range(0, len(lines), 200)]
    return docs


def test_gpt2_ids_match_hugging_face(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gptscratch.data.shakespeare import shakespeare_text

    monkeypatch.setenv("GPTSCRATCH_CACHE", str(shared_cache))
    docs = _oracle_corpus(shakespeare_text())
    assert sum(len(d) for d in docs) > 3_000_000
    ours = build_tokenizer("gpt2")
    hf = gpt2_hf_tokenizer()
    assert len(hf) == 50257 and hf.eos_token_id == 50256
    theirs = hf(docs)["input_ids"]
    mismatched = [i for i, d in enumerate(docs) if ours.encode(d) != theirs[i]]
    assert mismatched == []
    for text in VARIED:
        assert ours.encode(text) == hf(text)["input_ids"]
    # The one known difference: HF reads the literal text as the special token.
    assert hf("a<|endoftext|>b")["input_ids"] == [64, 50256, 65]


# --- bpe ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_text() -> str:
    return synthetic_text(30_000, seed=3) + ("To be, or not to be: that is the question.\n" * 200)


@pytest.fixture(scope="module")
def bpe(bpe_text: str) -> BPETokenizer:
    tok = build_tokenizer("bpe:600", bpe_text)
    assert isinstance(tok, BPETokenizer)
    return tok


def test_bpe_trains_and_round_trips(bpe: BPETokenizer, bpe_text: str) -> None:
    assert bpe.kind == "bpe" and bpe.vocab_size == 600 and bpe.eot_id == 0
    ids = bpe.encode(bpe_text)
    assert len(ids) < len(bpe_text.encode("utf-8")) / 2  # it learned useful merges
    assert max(ids) < bpe.vocab_size
    assert bpe.decode(ids) == bpe_text
    for text in VARIED:  # byte-level: any text, even unseen scripts, round-trips
        assert bpe.decode(bpe.encode(text)) == text


def test_bpe_bulk_path_equals_whole_text_encode(bpe: BPETokenizer, bpe_text: str) -> None:
    text = bpe_text
    assert len(split_for_encoding(text, 64_000)) > 1
    whole = bpe._tok.encode(text, add_special_tokens=False).ids
    assert bpe.encode_array(text).tolist() == whole


def test_bpe_training_is_deterministic(bpe: BPETokenizer, bpe_text: str) -> None:
    assert build_tokenizer("bpe:600", bpe_text).fingerprint() == bpe.fingerprint()


def test_save_and_load_give_identical_ids(bpe: BPETokenizer, tmp_path: Path) -> None:
    text = "To be, or not to be 🌍 — naïve"
    for tok in (bpe, build_tokenizer("gpt2"), build_tokenizer("char", text)):
        rebuilt = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
        assert rebuilt.kind == tok.kind and rebuilt.fingerprint() == tok.fingerprint()
        assert rebuilt.encode(text) == tok.encode(text)
        path = tmp_path / f"{tok.kind}.json"
        save_tokenizer(tok, path)
        loaded = load_tokenizer(path)
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.vocab_size == tok.vocab_size and loaded.eot_id == tok.eot_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bpe.json", "char.json", "gpt2.json"]


def test_fingerprints_differ_between_tokenizers(bpe: BPETokenizer) -> None:
    prints = {
        bpe.fingerprint(),
        build_tokenizer("gpt2").fingerprint(),
        build_tokenizer("char", "ab").fingerprint(),
        build_tokenizer("char", "abc").fingerprint(),
    }
    assert len(prints) == 4 and all(len(p) == 64 for p in prints)


# --- specs and saved data -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("word", "choose one of: char, gpt2, bpe:N"),
        ("", "choose one of"),
        ("gpt2:5", "choose one of"),
        ("bpe", "whole-number vocabulary size"),
        ("bpe:abc", "whole-number vocabulary size"),
        ("bpe:256", "between 257 and 1,000,000"),
        ("bpe:1000001", "between 257 and 1,000,000"),
    ],
)
def test_bad_specs_are_user_errors(spec: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        build_tokenizer(spec, "some text")


def test_spec_parsing() -> None:
    assert parse_tokenizer_spec("char") == ("char", None)
    assert parse_tokenizer_spec(" GPT2 ") == ("gpt2", None)
    assert parse_tokenizer_spec("bpe:8000") == ("bpe", 8000)


def test_damaged_saved_tokenizers_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown saved tokenizer kind"):
        tokenizer_from_dict({"kind": "word"})
    with pytest.raises(UserError, match="damaged"):
        tokenizer_from_dict({"kind": "bpe", "tokenizer_json": "{not json"})
    with pytest.raises(UserError, match="damaged"):
        tokenizer_from_dict({"kind": "char"})
    with pytest.raises(UserError, match="different GPT-2 files"):
        tokenizer_from_dict({"kind": "gpt2", "encoder_json_sha256": "0" * 64})
    with pytest.raises(UserError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match="unreadable"):
        load_tokenizer(tmp_path / "bad.json")


def test_split_for_encoding_cuts_only_between_lines() -> None:
    text = synthetic_text(5_000, seed=4)
    pieces = split_for_encoding(text, 1_000)
    assert "".join(pieces) == text and len(pieces) > 5
    for piece, after in zip(pieces, pieces[1:], strict=False):
        assert not piece[-1].isspace() and after[0] in "\r\n"
    assert split_for_encoding("", 10) == []
    assert split_for_encoding("x" * 50, 10) == ["x" * 50]  # no line break: one piece


def test_encoding_piece_by_piece_equals_whole_text(bpe: BPETokenizer) -> None:
    text = synthetic_text(4_000, seed=5)  # ~30k chars: one piece for every bulk path
    pieces = split_for_encoding(text, 40)  # hundreds of cuts, before "\n" and "\r\n"
    assert len(pieces) > 200 and any(p.startswith("\r\n") for p in pieces)
    for tok in (build_tokenizer("gpt2"), bpe):
        assert [i for p in pieces for i in tok.encode(p)] == tok.encode(text), tok.kind
