"""Preparing token files from one text: layout, meta, the split by position, reuse,
atomicity, and real-corpus speed (many documents, shards and workers: test_data_streaming)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from gptscratch.data import token_files
from gptscratch.data.prepare import default_prepared_dir, prepare
from gptscratch.data.sources import line_cut
from gptscratch.data.token_files import is_prepared_dir, load_prepared, token_dtype
from gptscratch.data.tokenizers.base import EOT
from gptscratch.errors import UserError
from gptscratch.files import atomic_file, cache_dir

FILES = [".gptscratch.json", "meta.json", "tokenizer.json", "train-00000.bin", "val-00000.bin"]


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    lines = [f"Line {i}: The Quick brown fox — naïve café {i * i}." for i in range(400)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_char_prepare_writes_files_and_meta(corpus: Path, tmp_path: Path) -> None:
    text = corpus.read_text(encoding="utf-8")
    data = prepare(str(corpus), "char", tmp_path / "out", val_fraction=0.25)
    assert sorted(p.name for p in data.dir.iterdir()) == FILES
    meta = json.loads((data.dir / "meta.json").read_text(encoding="utf-8"))
    assert meta == data.meta
    assert meta["tokenizer"] == "char" and meta["tokenizer_kind"] == "char"
    # One text is one document: a char vocabulary then needs no end-of-text id.
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == len(set(text))
    assert meta["eot_id"] is None and data.tokenizer.eot_id is None
    assert meta["tokenizer_fingerprint"] == data.tokenizer.fingerprint()
    assert meta["train_tokens"] + meta["val_tokens"] == len(text)
    assert meta["train_bytes"] + meta["val_bytes"] == len(text.encode("utf-8"))
    assert meta["val_fraction"] == 0.25 and meta["lowercase"] is False
    assert str(corpus) in meta["source"] and meta["source_fingerprint"]["files"][0][1] == len(
        text.encode("utf-8"))
    train, val = data.train_tokens(), data.val_tokens()
    assert train.dtype == np.uint16 and len(train) == meta["train_tokens"]
    assert (data.dir / "train-00000.bin").stat().st_size == 2 * meta["train_tokens"]
    train_text = data.tokenizer.decode(np.asarray(train).tolist())
    val_text = data.tokenizer.decode(np.asarray(val).tolist())
    assert train_text + val_text == text
    # The cut lands on a line boundary at or just after the exact 75% point.
    assert train_text.endswith("\n") and val_text.startswith("Line ")
    exact = int(len(text) * 0.75)
    assert exact <= len(train_text) <= exact + text[exact:].index("\n") + 1
    assert meta["val_bytes"] == len(val_text.encode("utf-8"))


def test_gpt2_prepare_is_uint16_and_decodes_back(corpus: Path, tmp_path: Path) -> None:
    data = prepare(str(corpus), "gpt2", tmp_path / "out")
    assert data.meta["dtype"] == "uint16" and data.meta["vocab_size"] == 50257
    assert data.meta["eot_id"] == 50256
    text = corpus.read_text(encoding="utf-8")
    ids = np.concatenate([data.train_tokens(), data.val_tokens()]).tolist()
    assert data.tokenizer.decode(ids) == text + EOT
    assert ids == data.tokenizer.encode(text) + [50256]


def test_prepare_is_deterministic(corpus: Path, tmp_path: Path) -> None:
    first = prepare(str(corpus), "bpe:300", tmp_path / "a")
    second = prepare(str(corpus), "bpe:300", tmp_path / "b")
    for name in FILES:
        assert (first.dir / name).read_bytes() == (second.dir / name).read_bytes(), name


def test_rerun_reuses_and_changed_options_rewrite(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare(str(corpus), "char", out)
    stamps = {name: (out / name).stat().st_mtime_ns for name in FILES}
    time.sleep(0.01)
    again = prepare(str(corpus), "char", out)
    assert again.meta == first.meta
    assert {name: (out / name).stat().st_mtime_ns for name in FILES} == stamps

    lower = prepare(str(corpus), "char", out, lowercase=True)
    assert lower.meta["lowercase"] is True
    assert lower.meta["vocab_size"] == len(set(corpus.read_text(encoding="utf-8").lower()))
    assert lower.tokenizer.decode(np.asarray(lower.val_tokens()).tolist()).islower()
    assert lower.meta["prepare_key"] != first.meta["prepare_key"]
    assert (out / "train-00000.bin").stat().st_mtime_ns != stamps["train-00000.bin"]
    assert load_prepared(out).meta == lower.meta

    other = prepare(str(corpus), "gpt2", out, lowercase=True)
    assert other.meta["tokenizer"] == "gpt2" and load_prepared(out).tokenizer.kind == "gpt2"
    split = prepare(str(corpus), "gpt2", out, lowercase=True, val_fraction=0.2)
    assert split.meta["val_tokens"] > other.meta["val_tokens"]

    corpus.write_text(corpus.read_text(encoding="utf-8") + "One more line.\n", encoding="utf-8")
    changed = prepare(str(corpus), "gpt2", out, lowercase=True, val_fraction=0.2)
    assert changed.meta["val_tokens"] > split.meta["val_tokens"]
    assert sorted(p.name for p in out.iterdir()) == FILES  # no temp files left behind


def test_load_prepared_checks_the_files(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare(str(corpus), "char", out)
    assert is_prepared_dir(out) and not is_prepared_dir(tmp_path)
    data = load_prepared(out)
    assert data.meta["train_tokens"] == len(data.train_tokens())

    with pytest.raises(UserError, match="not a prepared data folder"):
        load_prepared(tmp_path)
    raw = (out / "val-00000.bin").read_bytes()
    (out / "val-00000.bin").write_bytes(raw[:-2])
    with pytest.raises(UserError, match=r"val-00000.bin' has \d+ bytes but meta.json expects"):
        load_prepared(out)
    (out / "val-00000.bin").unlink()
    with pytest.raises(UserError, match="val-00000.bin' is missing"):
        load_prepared(out)
    (out / "val-00000.bin").write_bytes(raw[::-1])  # the right size, other contents
    load_prepared(out)
    with pytest.raises(UserError, match="does not match its sha256"):
        load_prepared(out, verify=True)
    (out / "val-00000.bin").write_bytes(raw)
    load_prepared(out, verify=True)
    (out / "meta.json").write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match="damaged"):
        load_prepared(out)
    # A broken folder is rewritten by the next prepare rather than trusted.
    assert prepare(str(corpus), "char", out).meta["train_tokens"] > 0
    load_prepared(out)


def test_crash_while_writing_leaves_no_meta(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    prepare(str(corpus), "char", out)

    def crash(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(token_files, "save_tokenizer", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(corpus), "gpt2", out)
    assert not is_prepared_dir(out)
    # The shards written before the crash are gone too; the marker and the old tokenizer stay.
    assert sorted(p.name for p in out.iterdir()) == [".gptscratch.json", "tokenizer.json"]
    monkeypatch.undo()
    assert prepare(str(corpus), "gpt2", out).meta["tokenizer"] == "gpt2"


def test_atomic_file_removes_the_temp_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_one_text_is_cut_at_a_line_and_bad_fractions(tmp_path: Path) -> None:
    assert line_cut("aaaa\nbbbb\ncccc\n", 0.5) == len("aaaa\nbbbb\n")
    assert line_cut("aaaa\nbbbb\n", 0.5) == len("aaaa\n")  # already a boundary
    path = tmp_path / "t.txt"
    path.write_text("aaaa\nbbbb\ncccc\n")
    data = prepare(str(path), "char", tmp_path / "cut", val_fraction=0.5)
    assert data.tokenizer.decode(np.asarray(data.val_tokens()).tolist()) == "cccc\n"
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(UserError, match="between 0 and 1"):
            prepare("unused", "char", tmp_path / "out", val_fraction=bad)
    with pytest.raises(UserError, match="choose one of"):
        prepare("unused", "word", tmp_path / "out")


def test_too_little_text_is_a_user_error(tmp_path: Path) -> None:
    one_line = tmp_path / "one.txt"
    one_line.write_text("a single line without a break", encoding="utf-8")
    with pytest.raises(UserError, match="validation split is empty.*--val-fraction"):
        prepare(str(one_line), "char", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_token_dtype_choice() -> None:
    assert token_dtype(80) == np.uint16
    assert token_dtype(50257) == np.uint16
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32
    assert token_dtype(1_000_000) == np.uint32


def test_default_dir_is_in_the_cache(corpus: Path) -> None:
    path = default_prepared_dir(str(corpus), "bpe:8000")
    assert path.parent == cache_dir() / "prepared"
    assert path.name.startswith("corpus.txt-") and path.name.endswith("-bpe8000")
    assert default_prepared_dir("shakespeare", "gpt2") != default_prepared_dir("other", "gpt2")
    data = prepare(str(corpus), "char")
    assert data.dir == default_prepared_dir(str(corpus), "char")


def test_shakespeare_gpt2_prepares_the_whole_corpus(
    shared_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The built-in corpus in GPT-2's BPE: all of it, ending in <|endoftext|>, with no progress
    bar off a terminal. (How fast is a benchmark's business: benchmarks/data_scale.py times
    preparing text built from the same corpus.)"""
    monkeypatch.setenv("GPTSCRATCH_CACHE", str(shared_cache))
    from gptscratch.data.shakespeare import shakespeare_text

    shakespeare_text()  # fetched (once, cached) outside what is checked
    data = prepare("shakespeare", "gpt2", tmp_path / "out")
    tokens = data.meta["train_tokens"] + data.meta["val_tokens"]
    assert data.meta["val_tokens"] > 0 and np.asarray(data.val_tokens())[-1] == 50256
    assert capfd.readouterr() == ("", "")  # no progress bar when not on a terminal
    assert 1_400_000 < tokens < 1_700_000
    assert data.meta["train_bytes"] / data.meta["train_tokens"] > 3.0
