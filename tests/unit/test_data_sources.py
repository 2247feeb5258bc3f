"""Reading raw text: files, folders, globs, Hugging Face datasets, and every user mistake."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from gptscratch import hub
from gptscratch.data.sources import read_text_source
from gptscratch.errors import UserError
from gptscratch.files import sha256_bytes

pytestmark = pytest.mark.usefixtures("private_cache")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_single_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.txt", "First line.\nSecond — ünïcode 🌍\n")
    text, description = read_text_source(str(path))
    assert text == "First line.\nSecond — ünïcode 🌍\n"
    assert str(path) in description


def test_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhello\n")
    assert read_text_source(str(path))[0] == "hello\n"


def test_folder_reads_text_files_recursively_in_sorted_order(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "b.txt", "bee")
    _write(tmp_path / "d" / "a.md", "ay")
    _write(tmp_path / "d" / "sub" / "c.txt", "sea")
    _write(tmp_path / "d" / "skip.py", "print('not text')")
    text, description = read_text_source(str(tmp_path / "d"))
    assert text == "ay\n\nbee\n\nsea"
    assert description.startswith("3 files")


def test_glob_reads_sorted_matches(tmp_path: Path) -> None:
    _write(tmp_path / "part2.txt", "two")
    _write(tmp_path / "part1.txt", "one")
    _write(tmp_path / "other.md", "no")
    text, description = read_text_source(str(tmp_path / "part*.txt"))
    assert text == "one\n\ntwo"
    assert "2 files" in description


def test_sha256_of_text() -> None:
    assert sha256_bytes(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_bytes("é".encode()) != sha256_bytes(b"e")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: d / "nope.txt", "input '.*nope.txt' not found"),
        (lambda d: _write(d / "empty.txt", ""), "empty.txt' is empty"),
        (lambda d: _write(d / "blank.txt", " \n\n\t"), "blank.txt' is empty"),
        (lambda d: _write(d / "f" / "x.py", "code").parent, "has no .txt, .md, .jsonl, .json "
                                                           "or .parquet files"),
        (lambda d: d / "*.nothing", "matches no files"),
    ],
)
def test_bad_inputs_are_one_line_user_errors(tmp_path: Path, make: object, needle: str) -> None:
    assert callable(make)
    source = make(tmp_path)
    with pytest.raises(UserError, match=needle) as info:
        read_text_source(str(source))
    assert "\n" not in str(info.value)


def test_folder_of_empty_files_is_empty(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "a.txt", "")
    with pytest.raises(UserError, match="is empty"):
        read_text_source(str(tmp_path / "d"))


def test_non_utf8_names_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(UserError) as info:
        read_text_source(str(path))
    message = str(info.value)
    assert "latin1.txt" in message and "offset 3" in message and "UTF-8" in message
    path.write_bytes(b"\xef\xbb\xbf" + "café".encode("latin-1"))  # offsets count the BOM
    with pytest.raises(UserError, match="offset 6"):
        read_text_source(str(path))


@pytest.mark.usefixtures("hf_offline")
def test_hf_local_text_builder(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.txt", "line one\nline two\n")
    second = _write(tmp_path / "b.txt", "doc two\n")
    text, description = read_text_source(
        "", hf_dataset="text", hf_data_files=[str(first), str(second)]
    )
    assert text == "line one\nline two\n\ndoc two"  # one document per file, kept whole
    assert "'text'" in description


@pytest.mark.usefixtures("hf_offline")
def test_hf_missing_column_lists_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.txt", "hello\n")
    with pytest.raises(UserError, match="no column 'story'.*pick one of: text"):
        read_text_source("", hf_dataset="text", hf_data_files=[str(path)], text_column="story")


@pytest.mark.usefixtures("hf_offline")
@pytest.mark.parametrize("streaming", [False, True])
def test_hf_hub_name_offline_fails_fast(streaming: bool) -> None:
    started = time.perf_counter()
    with pytest.raises(UserError) as info:
        read_text_source("", hf_dataset="roneneldan/TinyStories", hf_streaming=streaming)
    assert time.perf_counter() - started < 1.0
    assert str(info.value) == (
        "could not load Hugging Face dataset 'roneneldan/TinyStories': offline and not in the "
        "local cache; connect to the internet or pass local files with --hf-data-files"
    )


def test_unreachable_hub_switches_to_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    module = sys.modules.get("huggingface_hub.constants")
    if module is not None:  # restore the library flag after the test, too
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", module.HF_HUB_OFFLINE)
    calls = []

    def unreachable(address: tuple[str, int], timeout: float) -> socket.socket:
        calls.append((address, timeout))
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    hub.go_offline_if_unreachable()
    assert calls == [(("huggingface.co", 443), 1.0)]
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    if module is not None:
        assert module.HF_HUB_OFFLINE is True


def test_missing_datasets_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(UserError, match=r"pip install -c constraints.txt -e '\.\[hf\]'"):
        read_text_source("", hf_dataset="text", hf_data_files=[str(tmp_path / "a.txt")])


def test_shakespeare_name_is_the_builtin_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gptscratch.data.shakespeare.shakespeare_text", lambda: "HAMLET:\nTo be.\n")
    text, description = read_text_source("shakespeare")
    assert text == "HAMLET:\nTo be.\n" and "38 plays" in description
