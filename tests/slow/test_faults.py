"""kill -9 at random moments, a third of them inside checkpoint saves: every time, the last
checkpoint loads and verifies and at most the steps since it are lost; in the end every step
is logged once and the weights equal an uninterrupted run's, exactly (`fault_injection`)."""

from __future__ import annotations

from pathlib import Path

from fault_injection import kill_and_resume, report_json


def test_sigkill_anywhere_loses_nothing_saved(tmp_path: Path, tiny_corpus: Path) -> None:
    report = kill_and_resume(tmp_path, tiny_corpus, kills=6, seed=1)
    assert report.kills == 6 and report.inside_saves == 2, report_json(report)
    assert report.problems == [], report_json(report)
    assert report.checkpoints_verified >= 4
