"""Atomic writes and hashes: a write either happens whole or leaves the old version."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptscratch.files import atomic_dir, atomic_file, old_version, sha256_bytes, sha256_file


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
