"""A disk that fills up while gptscratch writes: one line saying the space needed, the
previous checkpoint (or data) intact, no temporary files left, exit 2.

Two ways to make writes fail for real, in a subprocess running the CLI: a file-size limit
(`RLIMIT_FSIZE`: writes past it fail with EFBIG, needing no privileges), and, where this
machine lets us mount one, a tiny tmpfs that fills up (ENOSPC)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY_MODEL, TINY_TRAIN

from gptscratch.checkpoints.checkpoint import load_checkpoint

FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY_MODEL, **TINY_TRAIN}.items()]


def cli(args: list[str], file_limit: int | None = None) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "gptscratch", *args], capture_output=True,
                          text=True, preexec_fn=limit, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no space left to write") and "Traceback" not in proc.stderr
    return last


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if ".tmp" in p.name]


def test_data_that_does_not_fit(tmp_path: Path, tiny_corpus: Path) -> None:
    proc = cli(["prepare", "--data", str(tiny_corpus), "--out", str(tmp_path / "d")],
               file_limit=20_000)  # train.bin is 108 kB
    line = one_error_line(proc)
    assert "train.bin" in line and "needs about" in line and "MB is free" in line
    assert not (tmp_path / "d" / "meta.json").exists() and leftovers(tmp_path) == []


def test_a_checkpoint_that_does_not_fit_keeps_the_previous(tmp_path: Path,
                                                           tiny_corpus: Path) -> None:
    run = tmp_path / "run"
    ok = cli(["train", "--data", str(tiny_corpus), "--out", str(run), *FLAGS,
              "--max-iters", "10"])
    assert ok.returncode == 0, ok.stderr[-2000:]
    proc = cli(["train", "--out", str(run), "--resume", "--max-iters", "20"],
               file_limit=60_000)  # state.pt is ~300 kB
    line = one_error_line(proc)
    assert "latest" in line and "intact" in line
    assert load_checkpoint(run, "latest").meta["step"] == 10  # verified, whole
    assert leftovers(run) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 400 kB tmpfs, where this machine allows mounting one (root, a capable container)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0 or os.geteuid() != 0:
        pytest.skip("cannot mount a tmpfs here (needs root in a capable container)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_disk_that_fills_up(small_disk: Path, tiny_run: Path, tmp_path: Path) -> None:
    run = small_disk / "run"
    shutil.copytree(tiny_run / "latest", run / "latest")  # ~320 kB: the disk is nearly full
    (run / "latest" / "checkpoint.json").write_text(
        (run / "latest" / "checkpoint.json").read_text().replace(
            str(Path(tiny_run).resolve() / "data"), str(tiny_run / "data")))
    proc = cli(["train", "--out", str(run), "--resume", "--max-iters", "30",
                "--data", str(tiny_run / "data")])
    one_error_line(proc)
    assert "No space left on device" in proc.stderr
    assert load_checkpoint(run, "latest").meta["step"] == 20 and leftovers(run) == []
