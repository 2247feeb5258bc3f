"""Killing training with SIGKILL at random moments, and checking that nothing was lost.

`kill_and_resume` trains a small fp32 model in a subprocess, kills it with SIGKILL (no
handler runs, no cleanup: as a power cut, the OOM killer or `kill -9` would), then resumes
it, again and again until the run is done, and checks after every kill that:
(a) `latest` (or its `.old` fallback) loads and verifies, once any checkpoint was saved;
(b) at most the steps since the last checkpoint were lost;
and at the end that (c) `metrics.jsonl` holds every step once, none missing or repeated, and
(d) the final weights equal those of an uninterrupted run at the same step, exactly.
Saves are slowed down (each fsync sleeps 30 ms) and a marker file exists while one is under
way, so that a share of the kills can be aimed inside a save; a kill counts as inside a save
only when the killed process left the marker behind. Kills wait for states (a step count, a
save under way), never for clock time, so a slow or shared machine moves them by no more than
a step. Used by `slow/test_faults.py`
(a few kills) and `benchmarks/faults.py` (the 50+ of docs/reliability.md).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.checkpoints.load import load_model
from gptscratch.errors import UserError
from gptscratch.training.metrics import read_metrics

STEPS = 60
EVAL_INTERVAL = 5
TRAIN_FLAGS = ["--block-size=32", "--n-layer=2", "--n-head=2", "--n-embd=32",
               f"--max-iters={STEPS}", f"--eval-interval={EVAL_INTERVAL}", "--eval-iters=1",
               "--log-interval=1", "--warmup-iters=2", "--max-time=0", "--dtype=float32",
               "--batch-size=4", "--dropout=0.1", "--sample-tokens=0", "--device=cpu"]
# The CLI, with every fsync slowed down and a marker file present while one runs.
WRAPPER = """
import pathlib, sys, time
import gptscratch.files as files
marker, real = pathlib.Path(sys.argv[1]), files._fsync
def slow(path):
    marker.touch()
    time.sleep(0.03)
    real(path)
    marker.unlink(missing_ok=True)
files._fsync = slow
from gptscratch.cli import main
sys.exit(main(sys.argv[2:]))
"""


@dataclass
class Report:
    runs: int = 0
    kills: int = 0
    aimed_at_saves: int = 0  # kills aimed inside a save...
    inside_saves: int = 0  # ...and those that landed there (the save's marker was left behind)
    checkpoints_verified: int = 0
    most_steps_lost: int = 0
    restarts_from_scratch: int = 0
    problems: list[str] = field(default_factory=list)


def _logged_steps(run: Path) -> list[int]:
    """The steps the run has logged so far. A run killed before its first checkpoint starts
    over and replaces its own folder, so the file may vanish between two looks."""
    try:
        return [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    except FileNotFoundError:
        return []


def _start(run: Path, corpus: Path, marker: Path) -> subprocess.Popen[bytes]:
    resume = (["--out", str(run), "--resume"] if _checkpoint_step(run) is not None
              else ["--data", str(corpus), "--out", str(run)])
    return subprocess.Popen([sys.executable, "-c", WRAPPER, str(marker), "train", *resume,
                             *TRAIN_FLAGS], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _checkpoint_step(run: Path) -> int | None:
    try:
        return int(load_checkpoint(run, prefer="latest").meta["step"])  # verifies every file
    except UserError:
        return None


def _wait_for(done: Callable[[], bool], proc: subprocess.Popen[bytes], report: Report,
              every: float) -> bool:
    """Poll until `done()`; False if `proc` ends first (or hangs for 10 minutes: a problem)."""
    deadline = time.monotonic() + 600
    while not done():
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            report.problems.append("a run made no progress for 10 minutes")
            return False
        time.sleep(every)
    return True


def _wait_and_kill(proc: subprocess.Popen[bytes], run: Path, marker: Path, aimed: bool,
                   rng: random.Random, report: Report) -> bool | None:
    """SIGKILL `proc` at a state: once it has logged a random 1 to 2 x EVAL_INTERVAL more
    steps, or (`aimed`) as soon as it is inside a save (the marker exists) after its first
    step. None if it ended first; else whether the kill landed inside a save (the killed
    process left the marker behind)."""
    start = len(_logged_steps(run))
    steps = start + 1 if aimed else start + rng.randint(1, 2 * EVAL_INTERVAL)
    if not _wait_for(lambda: len(_logged_steps(run)) >= steps, proc, report, 0.005):
        return None
    if aimed and not _wait_for(marker.exists, proc, report, 0.001):
        return None
    if proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return marker.exists()


def kill_and_resume(workdir: Path, corpus: Path, kills: int, seed: int = 0) -> Report:
    """Kill runs to `STEPS` `kills` times in all (a third inside saves), resuming after each;
    a run that reaches its end is checked and the next one starts. The report of checks."""
    rng, report = random.Random(seed), Report()
    reference = workdir / "reference"
    done = subprocess.run([sys.executable, "-m", "gptscratch", "train", "--data", str(corpus),
                           "--out", str(reference), *TRAIN_FLAGS], capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    while report.kills < kills and not report.problems:
        report.runs += 1
        run = workdir / f"run-{report.runs}"
        _kill_until_done(run, corpus, workdir / "saving", kills, rng, report)
        _check_end(run, reference, report)
    return report


def _kill_until_done(run: Path, corpus: Path, marker: Path, kills: int, rng: random.Random,
                     report: Report) -> None:
    """Start, kill and resume `run` until it ends (the last start, once `kills` are made, is
    left to finish)."""
    while True:
        marker.unlink(missing_ok=True)
        proc = _start(run, corpus, marker)
        if report.kills < kills:
            aimed = report.kills % 3 == 2
            landed = _wait_and_kill(proc, run, marker, aimed, rng, report)
            if landed is not None:
                report.kills += 1
                report.aimed_at_saves += aimed
                report.inside_saves += landed
                _check_after_kill(run, report)
                continue
        _, err = proc.communicate(timeout=600)  # it ended before the kill, or is left to end
        if proc.returncode != 0:
            report.problems.append(f"a resume failed: {err.decode()[-500:]}")
        return


def _check_after_kill(run: Path, report: Report) -> None:
    logged = _logged_steps(run)
    step = _checkpoint_step(run)
    if step is None:
        if any(s > EVAL_INTERVAL for s in logged):
            report.problems.append(f"no checkpoint loads after step {max(logged)}")
        report.restarts_from_scratch += 1
        return
    report.checkpoints_verified += 1
    lost = max(logged, default=step) - step
    report.most_steps_lost = max(report.most_steps_lost, lost)
    if lost > EVAL_INTERVAL:
        report.problems.append(f"{lost} steps lost (checkpoint {step}, reached {max(logged)})")


def _check_end(run: Path, reference: Path, report: Report) -> None:
    steps = _logged_steps(run)
    if steps != list(range(1, STEPS + 1)):
        report.problems.append(f"metrics.jsonl steps are not 1..{STEPS} once each: {steps}")
    mine = load_model(load_checkpoint(run, "latest")).model.state_dict()
    theirs = load_model(load_checkpoint(reference, "latest")).model.state_dict()
    if not all(torch.equal(mine[k], theirs[k]) for k in theirs):
        report.problems.append("the final weights differ from the uninterrupted run's")


def report_json(report: Report) -> str:
    return json.dumps(report.__dict__, indent=2)
