"""The README's quickstart holds a set-up, a main job and the test command CI runs."""

from __future__ import annotations

from conftest import REPO, quickstart_commands


def test_quickstart_has_setup_main_job_and_test_commands() -> None:
    setup, main_job, test = quickstart_commands()
    assert "pip install -c constraints.txt" in setup
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text()
    assert main_job.startswith("gptscratch train --preset shakespeare-char --data shakespeare")
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install -q -c constraints.txt -e \".[hf,dev]\"" in ci
    assert ci.strip().splitlines()[-1] == test  # CI runs exactly the README's test command
