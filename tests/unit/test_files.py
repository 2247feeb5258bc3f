"""Atomic writes and hashes: a write either happens whole or leaves the old version."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from gptscratch.errors import UserError
from gptscratch.files import (
    append_text,
    atomic_dir,
    atomic_file,
    old_version,
    sha256_bytes,
    sha256_file,
)


def test_atomic_dir_replaces_a_folder_whole(tmp_path: Path) -> None:
    dest = tmp_path / "ckpt"
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_text("one")
    with atomic_dir(dest) as tmp:
        (tmp / "b").write_text("two")
    assert sorted(p.name for p in dest.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or .old left


def test_atomic_dir_leaves_the_old_folder_when_the_block_fails(tmp_path: Path) -> None:
    dest = tmp_path / "ckpt"
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_text("one")
    with pytest.raises(KeyboardInterrupt), atomic_dir(dest) as tmp:
        (tmp / "b").write_text("half")
        raise KeyboardInterrupt
    assert (dest / "a").read_text() == "one" and not (dest / "b").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert old_version(dest) == tmp_path / "ckpt.old"


def test_atomic_file_and_hashes(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    with atomic_file(path) as tmp:
        tmp.write_bytes(b"abc")
    assert sha256_file(path) == sha256_bytes(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755),
                                                              (0o077, 0o600, 0o700)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, file_mode: int,
                                        dir_mode: int) -> None:
    """Even where a writer makes its file private (as safetensors does) or the temporary
    folder is private (mkdtemp), what lands follows the umask."""
    import os

    import safetensors.torch
    import torch

    previous = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "ckpt") as tmp:
            safetensors.torch.save_file({"w": torch.zeros(2)}, str(tmp / "w.safetensors"))
        with atomic_file(tmp_path / "a.png") as tmp:
            tmp.write_bytes(b"png")
            os.chmod(tmp, 0o600)
    finally:
        os.umask(previous)
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "ckpt" / "w.safetensors").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == file_mode


class RustError(Exception):
    """As safetensors and tokenizers raise: no errno, "(os error N)" in the message."""


@pytest.mark.parametrize(("failure", "reason"), [
    (OSError(errno.ENOSPC, "No space left on device"), "(No space left on device)"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "(Disk quota exceeded)"),
    (RustError("I/O error: File too large (os error 27)"), "(File too large)"),
])
def test_a_full_disk_is_one_line_with_the_space_needed(tmp_path: Path, failure: Exception,
                                                       reason: str) -> None:
    target = tmp_path / "train.bin"
    target.write_bytes(b"old")
    with pytest.raises(UserError) as caught, atomic_file(target, size=110_000) as tmp:
        tmp.write_bytes(b"x" * 5000)
        raise failure
    message = str(caught.value)
    assert message.startswith(f"no space left to write '{target}' {reason}: it needs about "
                              "107 kB, and ") and "is free on its disk" in message
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_a_failure_during_another_is_recognised(tmp_path: Path) -> None:
    """torch.save into a Python file raises a RuntimeError while handling the OSError."""
    with pytest.raises(UserError, match=r"needs about 3 bytes"), atomic_file(tmp_path / "s") as tmp:
        tmp.write_bytes(b"abc")
        try:
            raise OSError(errno.EFBIG, "File too large")
        except OSError:
            raise RuntimeError("unexpected pos 704 vs 598") from None


def test_other_errors_are_not_taken_for_a_full_disk(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="Permission"), atomic_file(tmp_path / "f"):
        raise OSError(errno.EACCES, "Permission denied")
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "f"):
        raise RuntimeError("(os error 13)")


def test_appending_to_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "metrics.jsonl"
    append_text(log, '{"step": 1}\n')

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(UserError, match=r"'.*metrics.jsonl' \(No space left on device\): it "
                                        r"needs about 12 bytes"):
        append_text(log, '{"step": 2}\n')
