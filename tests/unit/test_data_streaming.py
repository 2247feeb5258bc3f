"""Preparing a corpus of many documents as a stream: every source kind, the per-document split,
end-of-text tokens, shards, parallel workers, reuse, interruptions and old folders."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gptscratch.data import encode
from gptscratch.data import prepare as prepare_module
from gptscratch.data.batches import get_batch
from gptscratch.data.prepare import is_val_document, prepare
from gptscratch.data.sources import open_source
from gptscratch.data.token_files import ShardWriter, TokenSplit, is_prepared_dir, load_prepared
from gptscratch.data.tokenizers import EOT, build_tokenizer
from gptscratch.errors import UserError
from gptscratch.files import OWNER_MARKER

pytestmark = pytest.mark.usefixtures("private_cache")


def _doc(i: int) -> str:
    """Document i: a few lines, different from every other (its number is in each line)."""
    return "".join(f"Doc {i} line {j}: the café's naïve fox — {i * j} 🌍\n"
                   for j in range(3 + i % 4))


@pytest.fixture
def documents() -> list[str]:
    return [_doc(i) for i in range(24)]


@pytest.fixture
def folder(tmp_path: Path, documents: list[str]) -> Path:
    """The 24 documents as every kind of file a folder may hold, in sorted-name order:
    plain, gzip and zstandard text, JSON lines (plain and zstandard), a JSON array, parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text(documents[0], encoding="utf-8")
    (d / "b.md").write_text(documents[1], encoding="utf-8")
    with gzip.open(d / "c.txt.gz", "wt", encoding="utf-8") as f:
        f.write(documents[2])
    (d / "d.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(documents[3].encode()))
    lines = "".join(json.dumps({"id": i, "text": documents[i]}) + "\n" for i in range(4, 10))
    (d / "e.jsonl").write_text(lines, encoding="utf-8")
    lines = "".join(json.dumps({"text": documents[i]}) + "\n" for i in range(10, 14))
    (d / "f.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    (d / "g.json").write_text(json.dumps([{"text": t} for t in documents[14:18]]),
                              encoding="utf-8")
    pq.write_table(pa.table({"text": documents[18:24], "n": list(range(6))}),
                   d / "sub" / "h.parquet")
    (d / "notes.csv").write_text("not,read\n", encoding="utf-8")
    return d


def _expected(tok_spec: str, documents: list[str], val_fraction: float,
              tok: object) -> tuple[list[int], list[int]]:
    """What streaming must give: each document's own ids plus end-of-text, in order, train
    and val by the hash of the document's number."""
    train: list[int] = []
    val: list[int] = []
    for i, text in enumerate(documents):
        ids = tok.encode(text) + [tok.eot_id]  # type: ignore[attr-defined]
        (val if is_val_document(i, val_fraction) else train).extend(ids)
    return train, val


@pytest.mark.parametrize("spec", ["gpt2", "char", "bpe:300"])
def test_streaming_equals_encoding_each_document(spec: str, folder: Path, tmp_path: Path,
                                                  documents: list[str]) -> None:
    data = prepare(str(folder), spec, tmp_path / "out", val_fraction=0.25, shard_tokens=97)
    tok = data.tokenizer
    assert tok.eot_id is not None and data.meta["eot_id"] == tok.eot_id
    train, val = _expected(spec, documents, 0.25, tok)
    assert val, "the fixture must put some documents in val"
    assert np.asarray(data.train_tokens()).tolist() == train
    assert np.asarray(data.val_tokens()).tolist() == val
    meta = data.meta
    assert meta["train_documents"] + meta["val_documents"] == len(documents)
    assert meta["val_documents"] == sum(is_val_document(i, 0.25) for i in range(24))
    assert meta["train_bytes"] + meta["val_bytes"] == sum(len(t.encode()) for t in documents)
    # Shards: bounded, named in order, and what meta.json says they are.
    for split in ("train", "val"):
        shards = meta["shards"][split]
        assert [s["file"] for s in shards] == [f"{split}-{i:05d}.bin" for i in range(len(shards))]
        assert all(s["tokens"] == 97 for s in shards[:-1]) and 0 < shards[-1]["tokens"] <= 97
        assert sum(s["tokens"] for s in shards) == meta[f"{split}_tokens"]
    load_prepared(data.dir, verify=True)


def test_worker_processes_give_the_same_files(folder: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    one = prepare(str(folder), "gpt2", tmp_path / "one", workers=1, shard_tokens=200)
    monkeypatch.setattr(encode, "_POOL_MIN_CHARS", 0)  # a pool even for a small corpus
    monkeypatch.setattr(encode, "_BATCH_CHARS", 300)  # many batches in flight
    two = prepare(str(folder), "gpt2", tmp_path / "two", workers=2, shard_tokens=200)
    names = sorted(p.name for p in one.dir.iterdir())
    assert names == sorted(p.name for p in two.dir.iterdir()) and len(names) > 5
    for name in names:
        assert (one.dir / name).read_bytes() == (two.dir / name).read_bytes(), name


def test_val_documents_are_chosen_by_a_stable_hash() -> None:
    picks = [is_val_document(i, 0.1) for i in range(20_000)]
    assert picks == [is_val_document(i, 0.1) for i in range(20_000)]  # the same every time
    assert 0.09 < sum(picks) / len(picks) < 0.11
    fewer = [is_val_document(i, 0.05) for i in range(20_000)]
    assert all(p for p, f in zip(picks, fewer, strict=True) if f)  # nested: 5% within 10%


def test_splits_are_disjoint_and_deterministic(folder: Path, tmp_path: Path) -> None:
    first = prepare(str(folder), "char", tmp_path / "a", val_fraction=0.3)
    second = prepare(str(folder), "char", tmp_path / "b", val_fraction=0.3)
    for name in ("train-00000.bin", "val-00000.bin", "meta.json", "tokenizer.json"):
        assert (first.dir / name).read_bytes() == (second.dir / name).read_bytes()
    tok = first.tokenizer
    train = tok.decode(np.asarray(first.train_tokens()).tolist()).split(EOT)[:-1]
    val = tok.decode(np.asarray(first.val_tokens()).tolist()).split(EOT)[:-1]
    assert train and val and not set(train) & set(val)


def test_when_no_document_hashes_to_val_the_last_one_goes_there(tmp_path: Path) -> None:
    d = tmp_path / "three"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.txt").write_text(_doc(i), encoding="utf-8")
    assert not any(is_val_document(i, 0.01) for i in range(3))
    data = prepare(str(d), "gpt2", tmp_path / "out", val_fraction=0.01)
    tok = data.tokenizer
    assert tok.decode(np.asarray(data.val_tokens()).tolist()) == _doc(2) + EOT
    assert data.meta["val_documents"] == 1 and data.meta["train_documents"] == 2


def test_a_stream_of_one_document_is_split_by_position(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    text = "".join(f"line {i} of the only document\n" for i in range(200))
    path.write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
    data = prepare(str(path), "gpt2", tmp_path / "out", val_fraction=0.1)
    tok = data.tokenizer
    train = tok.decode(np.asarray(data.train_tokens()).tolist())
    val = tok.decode(np.asarray(data.val_tokens()).tolist())
    assert train + val == text + EOT and train.endswith("\n") and val.startswith("line ")
    assert 0.08 < len(val) / len(text) < 0.14
    assert data.meta["val_bytes"] == len(val.removesuffix(EOT).encode())


def test_lowercase_and_column_options_apply_in_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"body": f"Doc {i}: HELLO World\n"}) + "\n"
                            for i in range(30)), encoding="utf-8")
    data = prepare(str(path), "char", tmp_path / "out", text_column="body", lowercase=True)
    text = data.tokenizer.decode(np.concatenate([data.train_tokens(), data.val_tokens()]).tolist())
    assert "hello world" in text and "H" not in text
    # The old flag name still works.
    old = prepare(str(path), "char", tmp_path / "old", hf_text_column="body", lowercase=True)
    assert old.meta["prepare_key"] == data.meta["prepare_key"]


def test_reuse_follows_the_files_fingerprint(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare(str(folder), "gpt2", out)
    stamp = (out / "train-00000.bin").stat().st_mtime_ns
    assert prepare(str(folder), "gpt2", out).meta == first.meta
    assert (out / "train-00000.bin").stat().st_mtime_ns == stamp  # reused, not rewritten
    forced = prepare(str(folder), "gpt2", out, force=True)
    assert (out / "train-00000.bin").stat().st_mtime_ns != stamp
    assert forced.meta["prepare_key"] == first.meta["prepare_key"]
    (folder / "a.txt").write_text(_doc(0) + "One more line.\n", encoding="utf-8")
    changed = prepare(str(folder), "gpt2", out)
    assert changed.meta["prepare_key"] != first.meta["prepare_key"]
    assert changed.meta["train_tokens"] + changed.meta["val_tokens"] > (
        first.meta["train_tokens"] + first.meta["val_tokens"])


def test_an_interrupted_prepare_leaves_nothing_prepared_and_a_rerun_rebuilds(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    prepare(str(folder), "gpt2", out, shard_tokens=100)
    real_write = ShardWriter.write
    calls = []

    def interrupted(self: ShardWriter, ids: np.ndarray) -> None:
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        real_write(self, ids)

    monkeypatch.setattr(ShardWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(folder), "char", out, shard_tokens=100)
    assert not is_prepared_dir(out)
    assert sorted(p.name for p in out.iterdir()) == [OWNER_MARKER, "tokenizer.json"]
    monkeypatch.undo()
    # What a kill -9 leaves: shards, a temporary file, no meta.json; the rerun starts over.
    (out / "train-00003.bin").write_bytes(b"\0" * 10)
    (out / ".train-00004.bin.123.0123456789ab.tmp").write_bytes(b"\0" * 10)
    (out / "mine.txt").write_text("a file of the user's is never touched")
    data = prepare(str(folder), "char", out, shard_tokens=100)
    listed = sorted(p.name for p in out.iterdir())
    shards = [s["file"] for split in ("train", "val") for s in data.meta["shards"][split]]
    assert listed == sorted([OWNER_MARKER, "meta.json", "tokenizer.json", "mine.txt", *shards])
    load_prepared(out, verify=True)


def test_a_folder_of_the_first_format_still_loads_and_trains(tmp_path: Path) -> None:
    """Format 1 (before shards): one train.bin and one val.bin."""
    out = tmp_path / "v1"
    out.mkdir()
    tok = build_tokenizer("char", "abcdefgh\n")
    train = np.arange(500, dtype=np.uint16) % 9
    val = np.arange(100, dtype=np.uint16) % 9
    train.tofile(out / "train.bin")
    val.tofile(out / "val.bin")
    (out / "tokenizer.json").write_text(json.dumps(tok.to_dict()), encoding="utf-8")
    meta = {"format_version": 1, "tokenizer": "char", "tokenizer_kind": "char",
            "tokenizer_fingerprint": tok.fingerprint(), "vocab_size": 9, "eot_id": None,
            "dtype": "uint16", "train_tokens": 500, "val_tokens": 100, "train_bytes": 500,
            "val_bytes": 100, "source": "test", "source_sha256": "0" * 64,
            "prepare_key": "k", "val_fraction": 0.1, "lowercase": False}
    (out / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    data = load_prepared(out)
    assert np.asarray(data.train_tokens()).tolist() == train.tolist()
    assert np.asarray(data.val_tokens()).tolist() == val.tolist()


def test_token_split_reads_across_shard_ends_like_one_array(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    whole = rng.integers(0, 60_000, size=1000).astype(np.uint16)
    with ShardWriter(tmp_path, "train", np.dtype(np.uint16), shard_tokens=137) as writer:
        for piece in np.array_split(whole, 9):
            writer.write(piece)
    maps = [np.memmap(tmp_path / s["file"], dtype=np.uint16, mode="r") for s in writer.shards]
    split = TokenSplit(maps)
    assert len(split) == 1000 and split.max() == whole.max()
    assert np.array_equal(np.asarray(split), whole)
    assert np.array_equal(split[130:290], whole[130:290]) and split[136] == whole[136]
    idx = rng.integers(0, 1000, size=(7, 33))
    assert np.array_equal(split[idx], whole[idx])
    with pytest.raises(IndexError):
        split[np.array([1000])]
    # The batches (and so exact resume) do not depend on how the ids are sharded.
    a = get_batch(split, 4, 64, torch.Generator().manual_seed(3))
    b = get_batch(whole, 4, 64, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.usefixtures("hf_offline")
def test_hugging_face_streaming_of_local_json_lines(tmp_path: Path, documents: list[str]) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in documents), encoding="utf-8")
    data = prepare("", "gpt2", tmp_path / "out", hf_dataset="json", hf_data_files=[str(path)],
                   hf_streaming=True, val_fraction=0.25)
    train, val = _expected("gpt2", [t.rstrip("\n") for t in documents], 0.25, data.tokenizer)
    assert np.asarray(data.train_tokens()).tolist() == train
    assert np.asarray(data.val_tokens()).tolist() == val
    again = open_source("", hf_dataset="json", hf_data_files=[str(path)], hf_streaming=True)
    assert again.fingerprint["files"][0][1] == path.stat().st_size


def test_a_bad_file_mid_stream_is_one_line_or_skipped(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Read 64 bytes at a time in pieces of 100 characters: the bad byte comes after the first
    # pieces of b.txt have been tokenized.
    monkeypatch.setattr("gptscratch.data.sources.text._READ_BYTES", 64)
    monkeypatch.setattr("gptscratch.data.sources.text.PIECE_CHARS", 100)
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text(_doc(1), encoding="utf-8")
    (d / "b.txt").write_bytes(_doc(2).encode() * 20 + b"caf\xe9\n" + _doc(3).encode())
    bad_at = len(_doc(2).encode()) * 20 + 3
    with pytest.raises(UserError, match=f"b.txt' is not valid UTF-8 .*offset {bad_at}\\)"):
        prepare(str(d), "gpt2", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    data = prepare(str(d), "gpt2", tmp_path / "out", skip_bad_files=True)
    text = data.tokenizer.decode(np.concatenate([data.train_tokens(),
                                                 data.val_tokens()]).tolist())
    assert _doc(1) in text and "Doc 2 line 0" in text  # b.txt, up to its bad block
    assert "Doc 3" not in text


def test_prepare_option_errors(folder: Path, tmp_path: Path) -> None:
    for kwargs, needle in (({"workers": 0}, "workers"), ({"workers": 10_000}, "4 per core"),
                           ({"bpe_sample_mb": 0}, "bpe_sample"),
                           ({"bpe_sample_mb": float("inf")}, "bpe_sample"),
                           ({"bpe_sample_mb": float("nan")}, "bpe_sample"),
                           ({"val_fraction": 1.0}, "between 0 and 1")):
        with pytest.raises(UserError, match=needle):
            prepare(str(folder), "gpt2", tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    assert prepare_module.DEFAULT_BPE_SAMPLE_MB > 0


def test_whole_corpus_readers_take_it_a_piece_at_a_time(folder: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Script mode's speaker scan and the embedding picture's token counts read the corpus in
    pieces; the copy check refuses a corpus too large to index, in one line."""
    from gptscratch.api import understanding
    from gptscratch.generation import script
    from gptscratch.viz.embeddings import frequent_token_ids

    data = prepare(str(folder), "char", tmp_path / "out")
    whole = np.concatenate([data.train_tokens(), data.val_tokens()])
    counts = np.bincount(np.asarray(data.train_tokens()), minlength=data.tokenizer.vocab_size)
    assert frequent_token_ids(data.dir, 5).tolist() == np.argsort(
        -counts, kind="stable")[:5].tolist()
    monkeypatch.setattr(script, "_SCAN_CHUNK", 1000)
    pieces = list(script._corpus_text(data))
    assert len(pieces) > 5 and "".join(pieces) == data.tokenizer.decode(whole.tolist())
    monkeypatch.setattr(script, "_SCAN_TOKENS", 3000)
    assert len(list(script._corpus_text(data))) == 3
    assert understanding.corpus_index(data.dir) is not None
    monkeypatch.setattr(understanding, "COPY_CHECK_MAX_TOKENS", 100)
    with pytest.raises(UserError, match="indexes the whole training text in memory"):
        understanding.corpus_index(data.dir)
