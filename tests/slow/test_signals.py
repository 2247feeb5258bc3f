"""Real signals sent to a training process: SIGTERM and SIGINT finish the step, save, exit
143 / 130 with a line saying how to resume, and the resumed run ends exactly where an
uninterrupted one does; a second signal stops at once and leaves a whole checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL

from gptscratch.checkpoints.checkpoint import load_checkpoint

STEPS = 300
FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()] + [
    f"--max-iters={STEPS}", "--eval-interval=100000", "--eval-iters=1", "--log-interval=1",
    "--warmup-iters=2", "--max-time=0", "--dtype=float32", "--batch-size=4", "--dropout=0.1",
    "--sample-tokens=0", "--device=cpu"]


def train(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gptscratch", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines()
            if line.strip() and '"loss"' in line]


def wait_for_step(proc: subprocess.Popen[str], run: Path, step: int) -> None:
    deadline = time.monotonic() + 120
    while not logged_steps(run) or logged_steps(run)[-1] < step:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "training never got there"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """The same run, never interrupted."""
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = train("--data", str(tiny_corpus), "--out", str(run), *FLAGS)
    assert proc.wait(timeout=600) == 0, proc.communicate()[1][-2000:]
    return run


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run, "latest").build_model().state_dict()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_and_the_resume_is_exact(signum: int, code: int, tmp_path: Path,
                                                tiny_corpus: Path, reference: Path) -> None:
    run = tmp_path / "run"
    proc = train("--data", str(tiny_corpus), "--out", str(run), *FLAGS)
    wait_for_step(proc, run, 40)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    last = err.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last.startswith(f"{name}: stopped at step ") and last.endswith("--resume"), last
    stopped = int(last.split("stopped at step ")[1].split(",")[0])
    assert stopped >= 40 and load_checkpoint(run, "latest").meta["step"] == stopped
    resumed = train("--out", str(run), "--resume", "--sample-tokens=0")
    assert resumed.wait(timeout=600) == 0, resumed.communicate()[1][-2000:]
    assert logged_steps(run) == list(range(1, STEPS + 1))  # no step lost or repeated
    mine, theirs = weights(run), weights(reference)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_a_second_signal_stops_at_once_and_the_checkpoint_stays_whole(
        tmp_path: Path, tiny_corpus: Path) -> None:
    run = tmp_path / "run"
    proc = train("--data", str(tiny_corpus), "--out", str(run), *FLAGS, "--eval-interval=20")
    wait_for_step(proc, run, 30)
    proc.send_signal(signal.SIGINT)
    os.kill(proc.pid, signal.SIGINT)  # at once: before, during or after the save
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    ckpt = load_checkpoint(run, "latest")  # verifies every file's sha256
    assert ckpt.meta["step"] >= 20
    assert not [p for p in run.iterdir() if p.name.startswith(".latest.tmp")]
