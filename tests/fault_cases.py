"""Signals and full disks sent to real gptscratch processes, as functions that return what
went wrong (an empty list: nothing lost, nothing corrupted).

- `signal_and_resume`: SIGTERM or SIGINT once training passed a step; the process must save,
  exit 128 + signal with a line saying how to resume, and the resumed run must end exactly
  where an uninterrupted one does (every step logged once, equal weights).
- `double_signal`: a second signal some moments after the first stops at once; the last
  checkpoint (the one before, or the one the first signal saved) stays whole, and no
  traceback is printed.
- `full_disk_prepare`, `full_disk_checkpoint`: writes fail past a file-size limit
  (`RLIMIT_FSIZE`, EFBIG, no privileges needed); `full_disk_tmpfs`: a tiny tmpfs fills up
  (ENOSPC; needs root). The answer must be one line naming the space needed, exit 2, the
  previous data or checkpoint intact and no temporary file left.

Used by `slow/test_signals.py`, `slow/test_full_disk.py` and `benchmarks/faults.py`, whose
many cases make docs/reliability.md.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.checkpoints.load import load_model
from gptscratch.errors import UserError
from gptscratch.training.metrics import read_metrics

MODEL = ["--block-size=32", "--n-layer=2", "--n-head=2", "--n-embd=32", "--dtype=float32",
         "--device=cpu", "--sample-tokens=0", "--eval-iters=1", "--warmup-iters=2",
         "--max-time=0"]
SIGNAL_STEPS = 120  # long enough to signal mid-run, short enough for CI (~1 s a 10 steps)
SIGNAL_FLAGS = [*MODEL, f"--max-iters={SIGNAL_STEPS}", "--eval-interval=100000",
                "--log-interval=1", "--batch-size=4", "--dropout=0.1"]
DOUBLE_SIGNAL_EVERY = 20  # checkpoints every 20 steps, so one exists when the signals come
DISK_FLAGS = [*MODEL, "--batch-size=8", "--eval-interval=10", "--log-interval=5"]


@dataclass
class Outcome:
    """What a case found wrong (nothing, if all is well) and the last line gptscratch said."""

    said: str = ""
    problems: list[str] = field(default_factory=list)


def _last_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else ""


def train(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gptscratch", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    return [r["step"] for r in read_metrics(path) if "loss" in r] if path.exists() else []


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders gptscratch left behind."""
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


def wait_for_step(proc: subprocess.Popen[str], run: Path, step: int) -> None:
    deadline = time.monotonic() + 120
    while not logged_steps(run) or logged_steps(run)[-1] < step:
        if proc.poll() is not None:
            raise AssertionError(f"training ended before step {step}: "
                                 f"{proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"training never reached step {step}")
        time.sleep(0.02)


def uninterrupted(run: Path, corpus: Path) -> Path:
    """The signal runs' reference: the same training, never interrupted."""
    proc = train("--data", str(corpus), "--out", str(run), *SIGNAL_FLAGS)
    if proc.wait(timeout=600) != 0:
        raise AssertionError(proc.communicate()[1][-2000:])
    return run


def _same_weights(a: Path, b: Path) -> bool:
    mine = load_model(load_checkpoint(a, "latest")).model.state_dict()
    theirs = load_model(load_checkpoint(b, "latest")).model.state_dict()
    return all(torch.equal(mine[k], theirs[k]) for k in theirs)


def signal_and_resume(run: Path, corpus: Path, reference: Path, signum: int,
                      at_step: int) -> Outcome:
    proc = train("--data", str(corpus), "--out", str(run), *SIGNAL_FLAGS)
    wait_for_step(proc, run, at_step)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    name, code = signal.Signals(signum).name, 128 + signum
    out = Outcome(_last_line(err))
    if proc.returncode != code:
        out.problems.append(f"{name} at step {at_step}: exit {proc.returncode}, not {code}: "
                            f"{err[-500:]}")
        return out
    if not (out.said.startswith(f"{name}: stopped at step ") and out.said.endswith("--resume")):
        out.problems.append(f"{name}: the last line does not say how to resume")
        return out
    stopped = int(out.said.split("stopped at step ")[1].split(",")[0])
    saved = load_checkpoint(run, "latest").meta["step"]
    if stopped < at_step or saved != stopped:
        out.problems.append(f"{name}: said step {stopped}, saved step {saved}, signalled "
                            f"after step {at_step}")
    resumed = train("--out", str(run), "--resume", "--sample-tokens=0")
    if resumed.wait(timeout=600) != 0:
        out.problems.append(f"{name}: the resume failed: {resumed.communicate()[1][-500:]}")
        return out
    if logged_steps(run) != list(range(1, SIGNAL_STEPS + 1)):
        out.problems.append(f"{name}: steps lost or repeated in metrics.jsonl")
    if not _same_weights(run, reference):
        out.problems.append(f"{name}: the resumed weights differ from the uninterrupted run's")
    return out


def double_signal(run: Path, corpus: Path, signum: int, delay: float,
                  at_step: int = 30) -> Outcome:
    """A second `signum` `delay` seconds after the first: before, during or after the save
    the first one asked for."""
    proc = train("--data", str(corpus), "--out", str(run), *SIGNAL_FLAGS,
                 f"--eval-interval={DOUBLE_SIGNAL_EVERY}")
    wait_for_step(proc, run, at_step)
    proc.send_signal(signum)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    out = Outcome(_last_line(err))
    # 128 + signum from gptscratch; or -signum: the second signal came after the run had
    # returned and its handlers were given back, and the signal's default action ended the
    # process (a shell reports that as 128 + signum too).
    if proc.returncode not in (128 + signum, -signum) or "Traceback" in err:
        out.problems.append(f"two {name}s {delay} s apart: exit {proc.returncode}: "
                            f"{err[-500:]}")
    try:
        step = load_checkpoint(run, "latest").meta["step"]  # verifies every file's sha256
        if step < DOUBLE_SIGNAL_EVERY:
            out.problems.append(f"two {name}s: the checkpoint is at step {step}")
    except UserError as exc:
        out.problems.append(f"two {name}s {delay} s apart: no whole checkpoint: {exc}")
    out.problems += [f"left behind: {p}" for p in leftovers(run)]
    return out


def limited_cli(args: list[str], file_limit: int | None = None
                ) -> subprocess.CompletedProcess[str]:
    """The CLI in a process whose writes fail past `file_limit` bytes per file."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "gptscratch", *args], capture_output=True,
                          text=True, preexec_fn=limit, timeout=300)


def disk_full_outcome(proc: subprocess.CompletedProcess[str], case: str) -> Outcome:
    """The answer to a full disk: exit 2 and a last line saying so, no traceback."""
    out = Outcome(_last_line(proc.stderr))
    if proc.returncode != 2 or "Traceback" in proc.stderr:
        out.problems.append(f"{case}: exit {proc.returncode}: {proc.stderr[-1500:]}")
    elif not (out.said.startswith("error: no space left to write") and "needs about" in out.said
              and "is free" in out.said):
        out.problems.append(f"{case}: the last line is not the one-line answer")
    return out


def full_disk_prepare(out: Path, corpus: Path, file_limit: int) -> Outcome:
    """Prepare `corpus` (its train-00000.bin is larger than `file_limit`) into a new folder."""
    proc = limited_cli(["prepare", "--data", str(corpus), "--out", str(out)], file_limit)
    case = f"prepare, files limited to {file_limit:,} bytes"
    outcome = disk_full_outcome(proc, case)
    if (out / "meta.json").exists():
        outcome.problems.append(f"{case}: the folder looks prepared")
    outcome.problems += [f"{case}: left behind {p}" for p in leftovers(out.parent)]
    return outcome


def trained_run(run: Path, corpus: Path, steps: int = 10) -> Path:
    # GPT-2's architecture: the file limits of test_full_disk.py were chosen inside its
    # checkpoint's files (AdamW keeps two moments per weight; Muon's state.pt is smaller).
    proc = limited_cli(["train", "--preset", "shakespeare-char-gpt2", "--data", str(corpus),
                        "--out", str(run), *DISK_FLAGS, f"--max-iters={steps}"])
    if proc.returncode != 0:
        raise AssertionError(proc.stderr[-2000:])
    return run


def full_disk_checkpoint(run: Path, file_limit: int) -> Outcome:
    """Resume `run` (a `trained_run`) for 10 more steps, writes limited to `file_limit`
    bytes per file."""
    before = load_checkpoint(run, "latest").meta["step"]
    proc = limited_cli(["train", "--out", str(run), "--resume", "--max-iters",
                        str(before + 10)], file_limit)
    case = f"a checkpoint save, files limited to {file_limit:,} bytes"
    out = disk_full_outcome(proc, case)
    try:
        if load_checkpoint(run, "latest").meta["step"] != before:
            out.problems.append(f"{case}: latest moved although its save failed")
    except UserError as exc:
        out.problems.append(f"{case}: the previous checkpoint no longer loads: {exc}")
    out.problems += [f"{case}: left behind {p}" for p in leftovers(run)]
    return out


def mount_tmpfs(mount: Path, kilobytes: int) -> bool:
    """A tmpfs of `kilobytes` at `mount`, where this machine allows it (root, a capable
    container)."""
    mount.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs",
                           str(mount)], capture_output=True)
    return made.returncode == 0


def unmount(mount: Path) -> None:
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def full_disk_tmpfs(disk: Path, trained: Path) -> Outcome:
    """Copy the checkpoint of `trained` (a `trained_run`) onto the small mounted `disk` and
    resume it there until the disk is full."""
    run = disk / "run"
    shutil.copytree(trained / "latest", run / "latest")
    data = trained / "data"
    meta = run / "latest" / "checkpoint.json"  # the data stays on the big disk
    meta.write_text(meta.read_text().replace(str(data.resolve()), str(data)))
    before = load_checkpoint(run, "latest").meta["step"]
    proc = limited_cli(["train", "--out", str(run), "--resume", "--max-iters",
                        str(before + 100), "--data", str(data)])
    case = f"a {shutil.disk_usage(disk).total // 1024} kB disk"
    out = disk_full_outcome(proc, case)
    if not out.problems and "No space left on device" not in out.said:
        out.problems.append(f"{case}: the line does not say the disk is full")
    try:
        load_checkpoint(run, "latest")
    except UserError as exc:
        out.problems.append(f"{case}: the last checkpoint no longer loads: {exc}")
    out.problems += [f"{case}: left behind {p}" for p in leftovers(run)]
    return out
