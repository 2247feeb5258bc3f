"""A disk that fills up while gptscratch writes: one line saying the space needed, the
previous checkpoint (or data) intact, no temporary files left, exit 2 (`fault_cases`): past
a file-size limit (EFBIG, no privileges needed) and, where this machine lets us mount one, on
a tiny tmpfs (ENOSPC)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_cases import (
    full_disk_checkpoint,
    full_disk_prepare,
    full_disk_tmpfs,
    mount_tmpfs,
    trained_run,
    unmount,
)


def test_data_that_does_not_fit(tmp_path: Path, tiny_corpus: Path) -> None:
    outcome = full_disk_prepare(tmp_path / "d", tiny_corpus, 20_000)  # train-00000.bin: 108 kB
    assert outcome.problems == [] and "train-00000.bin" in outcome.said


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    return trained_run(tmp_path_factory.mktemp("disk") / "run", tiny_corpus)


@pytest.mark.parametrize("file_limit", [60_000, 200_000])  # within the weights, within state.pt
def test_a_checkpoint_that_does_not_fit_keeps_the_previous(
        file_limit: int, tmp_path: Path, trained: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    outcome = full_disk_checkpoint(run, file_limit)
    assert outcome.problems == [] and f"'{run / 'latest'}'" in outcome.said


def test_a_metrics_line_that_does_not_fit(tmp_path: Path, trained: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    outcome = full_disk_checkpoint(run, (run / "metrics.jsonl").stat().st_size + 10)
    assert outcome.problems == [] and "metrics.jsonl" in outcome.said


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    if not mount_tmpfs(mount, 400):
        pytest.skip("cannot mount a tmpfs here (needs root in a capable container)")
    try:
        yield mount
    finally:
        unmount(mount)


def test_a_disk_that_fills_up(small_disk: Path, trained: Path) -> None:
    assert full_disk_tmpfs(small_disk, trained).problems == []
