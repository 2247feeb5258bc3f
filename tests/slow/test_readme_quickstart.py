"""The README quickstart runs as written: the set-up tail and the main job (shortened)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import quickstart_commands


@pytest.mark.slow
def test_quickstart_setup_tail_and_main_job_run(tmp_path: Path) -> None:
    setup, main_job, _ = quickstart_commands()
    # The pip part of the set-up is what CI itself just ran; run what follows it.
    after_install = setup.split(" && ")[-1]
    assert after_install.startswith("gptscratch ")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    shorter = ["--max-iters", "30", "--eval-interval", "15", "--eval-iters", "2",
               "--sample-tokens", "200"]
    for command in (after_install, main_job):
        args = shlex.split(command)
        if args[1] == "train":
            args += shorter
        proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "out" / "shakespeare-char"
    assert (run / "latest" / "model.safetensors").exists()
    assert (run / "best" / "checkpoint.json").exists()
    assert "--- a sample from" in proc.stdout
    sample = proc.stdout.split("---\n", 1)[1]
    assert len(sample) > 100
