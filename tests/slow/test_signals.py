"""Real signals sent to a training process: SIGTERM and SIGINT finish the step, save, exit
143 / 130 with a line saying how to resume, and the resumed run ends exactly where an
uninterrupted one does; a second signal stops at once and leaves a whole checkpoint
(`fault_cases`)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from fault_cases import double_signal, signal_and_resume, uninterrupted


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    return uninterrupted(tmp_path_factory.mktemp("reference") / "run", tiny_corpus)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_and_the_resume_is_exact(signum: int, tmp_path: Path,
                                                tiny_corpus: Path, reference: Path) -> None:
    outcome = signal_and_resume(tmp_path / "run", tiny_corpus, reference, signum, 40)
    assert outcome.problems == [] and "--resume" in outcome.said


def test_a_second_signal_stops_at_once_and_the_checkpoint_stays_whole(
        tmp_path: Path, tiny_corpus: Path) -> None:
    assert double_signal(tmp_path / "run", tiny_corpus, signal.SIGINT, delay=0.0).problems == []
