"""kill -9 at random moments, a third of them inside checkpoint saves: every time, the last
checkpoint loads and verifies and at most the steps since it are lost; in the end every step
is logged once and the weights equal an uninterrupted run's, exactly (`fault_injection`)."""

from __future__ import annotations

from pathlib import Path

from fault_injection import kill_and_resume, report_json


def test_sigkill_anywhere_loses_nothing_saved(tmp_path: Path, tiny_corpus: Path) -> None:
    """Six SIGKILLs, two aimed inside a checkpoint save, each followed by a resume: nothing
    saved is lost (the checks of `fault_injection`). What is asserted is what happened, not what
    a machine's speed would make happen: the kills were made, at least one landed inside a
    save (it left the save's marker behind), and every kill after the first checkpoint found
    one that loads."""
    report = kill_and_resume(tmp_path, tiny_corpus, kills=6, seed=1)
    said = report_json(report)
    assert report.problems == [], said
    assert report.kills == 6 and report.aimed_at_saves == 2, said
    assert report.inside_saves >= 1, said
    assert report.checkpoints_verified + report.restarts_from_scratch == 6, said
    assert report.checkpoints_verified >= 3, said
