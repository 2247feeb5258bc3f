"""Reliability report: faults thrown at real gptscratch processes, and what survived them.

- kill -9 at random moments of a 60-step run, a third of the kills aimed inside checkpoint
  saves, resumed after each (`tests/fault_injection.py`);
- SIGTERM and SIGINT at random steps, each resumed to the end; and two signals in a row,
  some milliseconds apart (`tests/fault_cases.py`);
- full disks: `prepare` and checkpoint saves past file-size limits that land in every file
  written, and tiny tmpfs disks where this machine can mount them (`tests/fault_cases.py`);
- fuzzing: the Hypothesis tests of `tests/slow/test_fuzz.py` with many more examples than CI
  runs, counted per input kind.

    python benchmarks/faults.py                      # the full report (~30 min on 2 cores)
    python benchmarks/faults.py --kills 3 --signals 1 --fuzz-examples 10   # a quick look

Prints a table, writes benchmarks/results/faults.json and docs/reliability.md. Run it alone:
it starts many training processes, and this 2-core machine has no room for another job.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fault_cases import (  # noqa: E402 (the test helpers live in tests/)
    SIGNAL_STEPS,
    Outcome,
    double_signal,
    full_disk_checkpoint,
    full_disk_prepare,
    full_disk_tmpfs,
    mount_tmpfs,
    signal_and_resume,
    trained_run,
    uninterrupted,
    unmount,
)
from fault_injection import kill_and_resume  # noqa: E402
from provenance import provenance  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "faults.json"
REPORT = REPO / "docs" / "reliability.md"
CORPUS = REPO / "tests" / "fixtures" / "plays.txt"
# Byte limits per file: inside train.bin (108 kB) for prepare; for a checkpoint save, inside
# model.safetensors (112 kB) and state.pt (245 kB) at several depths.
PREPARE_LIMITS = [1_000, 8_000, 20_000, 50_000, 100_000]
CHECKPOINT_LIMITS = [1_000, 20_000, 60_000, 100_000, 130_000, 180_000, 240_000]
TMPFS_KB = [380, 450, 550, 650]  # a checkpoint is ~350 kB; a save needs room for two


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip()
                   for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def timed(section: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    result = section()
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(f"  ... {result['seconds']:.0f} s, problems: {len(result['problems'])}", flush=True)
    return result


def kills(work: Path, n: int) -> dict[str, Any]:
    report = kill_and_resume(work, CORPUS, kills=n, seed=13)
    return {**report.__dict__}


def case(name: str, outcome: Outcome) -> dict[str, Any]:
    print(f"  {name}: {'ok' if not outcome.problems else outcome.problems}", flush=True)
    return {"case": name, "said": _short(outcome.said), "problems": outcome.problems}


def _short(line: str) -> str:
    """The answer without this run's temporary paths."""
    return re.sub(r"/(?:[^\s/']+/)+([^\s/']+)", r".../\1", line)


def signals(work: Path, n: int) -> dict[str, Any]:
    rng = random.Random(7)
    reference = uninterrupted(work / "reference", CORPUS)
    cases = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        for i in range(n):
            step = rng.randint(5, SIGNAL_STEPS - 20)
            cases.append(case(f"{signum.name} after step {step}, resumed", signal_and_resume(
                work / f"{signum.name}-{i}", CORPUS, reference, signum, step)))
        for delay in (0.0, 0.005, 0.02, 0.05, 0.2)[:max(1, n + 2)]:
            cases.append(case(f"two {signum.name}s {delay * 1000:.0f} ms apart", double_signal(
                work / f"{signum.name}-twice-{delay}", CORPUS, signum, delay)))
    return {"cases": cases, "problems": [p for c in cases for p in c["problems"]]}


def full_disks(work: Path) -> dict[str, Any]:
    cases = []
    for limit in PREPARE_LIMITS:
        cases.append(case(f"prepare, {limit:,} bytes per file", full_disk_prepare(
            work / f"prepare-{limit}" / "data", CORPUS, limit)))
    trained = trained_run(work / "trained", CORPUS, steps=20)
    limits = [(trained / "metrics.jsonl").stat().st_size + 10, *CHECKPOINT_LIMITS]
    for limit in limits:
        run = work / f"train-{limit}"
        shutil.copytree(trained, run)
        cases.append(case(f"train --resume, {limit:,} bytes per file",
                          full_disk_checkpoint(run, limit)))
    skipped = ""
    for kb in TMPFS_KB:
        disk = work / f"disk-{kb}"
        if not mount_tmpfs(disk, kb):
            skipped = "tmpfs disks: not run (mounting one needs root in a capable container)"
            break
        try:
            cases.append(case(f"train --resume on a {kb} kB disk", full_disk_tmpfs(disk, trained)))
        finally:
            unmount(disk)
    return {"cases": cases, "skipped": skipped,
            "problems": [p for c in cases for p in c["problems"]]}


def fuzz(examples: int) -> dict[str, Any]:
    """The fuzz tests with `examples` each; examples per test and per input kind."""
    env = {**os.environ, "FUZZ_EXAMPLES": str(examples)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/slow/test_fuzz.py", "--hypothesis-show-statistics"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    tests: dict[str, dict[str, Any]] = {}
    for block in proc.stdout.split("tests/slow/test_fuzz.py::")[1:]:
        name = block.split(":", 1)[0]
        passing = sum(int(n) for n in re.findall(r"(\d+) passing", block))
        kinds = {k: round(float(pct) * passing / 100) for pct, k in
                 re.findall(r"\* ([\d.]+)%, ([\w:\- ]+)\n", block) if len(k) < 20}
        tests[name] = {"passing": passing, "per_kind": kinds}
    failed = re.findall(r"^FAILED (.*)$", proc.stdout, flags=re.M)
    problems = failed + ([] if proc.returncode == 0 else [proc.stdout[-1500:]])
    return {"examples_each": examples, "tests": tests, "problems": problems}


def write_report(results: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    REPORT.write_text(render(results))


def render(r: dict[str, Any]) -> str:
    k, s, d, f = r["kills"], r["signals"], r["disks"], r["fuzz"]
    verdict = {True: "yes", False: "**no**: see below"}
    examples = sum(t["passing"] for t in f["tests"].values())
    lines = [
        "# Reliability report",
        "",
        "Faults thrown at real gptscratch processes, and whether anything was lost or "
        "corrupted. Produced by `benchmarks/faults.py` (which writes this file and "
        "`benchmarks/results/faults.json`); the same checks, with fewer cases, run in the "
        "test suite's slow tier (`tests/slow/test_faults.py`, `test_signals.py`, "
        "`test_full_disk.py`, `test_fuzz.py`).",
        "",
        f"- Command: `{r['command']}`",
        f"- Machine: {r['machine']}",
        f"- Date: {r['date']}; took {r['seconds'] / 60:.0f} minutes"
        + (f"; code as of commit {r['provenance']['commit']}" if r.get("provenance") else ""),
        "",
        "| Fault | Cases | Nothing lost or corrupted |",
        "|---|---|---|",
        f"| kill -9 at random steps, resumed each time | {k['kills']} kills in {k['runs']} "
        f"runs, {k['inside_saves']} inside checkpoint saves | {verdict[not k['problems']]} |",
        f"| SIGTERM / SIGINT, resumed; two signals in a row | {len(s['cases'])} | "
        f"{verdict[not s['problems']]} |",
        f"| A full disk while preparing data or saving | {len(d['cases'])} | "
        f"{verdict[not d['problems']]} |",
        f"| Fuzzed files, command lines and prompts | {examples} examples | "
        f"{verdict[not f['problems']]} |",
        "",
        "## kill -9",
        "",
        "A 60-step fp32 run (checkpoint every 5 steps, dropout 0.1) is killed with SIGKILL, "
        "resumed, killed again, until it ends; then the next run starts, until all the kills "
        "are made. A kill waits for a state, not for clock time: 1 to 10 more steps logged, "
        "or, for every third kill, a save under way (saves are slowed: each fsync sleeps 30 ms "
        "and leaves a marker while it runs). A kill counts as inside a save only when the "
        "killed process left that marker behind. After every kill the last checkpoint (or its "
        "`.old` fallback) must load with every file's sha256 verified, and at most the steps "
        "since it may be lost; at the end `metrics.jsonl` must hold steps 1..60 once each and "
        "the weights must equal an uninterrupted run's exactly.",
        "",
        f"- kills: {k['kills']} ({k['aimed_at_saves']} aimed inside saves, "
        f"{k['inside_saves']} landed inside); checkpoints verified after "
        f"a kill: {k['checkpoints_verified']}; kills before the first checkpoint (restarted "
        f"from scratch): {k['restarts_from_scratch']}",
        f"- most steps lost to one kill: {k['most_steps_lost']} (a checkpoint every 5)",
        f"- problems: {k['problems'] or 'none'}",
        "",
        "## Signals",
        "",
        "A 300-step run gets SIGTERM or SIGINT after a random step: it must finish the step, "
        "save, exit 143 / 130 with a line saying how to resume, and the resumed run must log "
        "every step once and end with the uninterrupted run's weights, exactly. Two signals "
        "in a row: the second stops the process at once, whatever the first was doing (exit "
        "143 / 130; or, when it comes after the run has returned and handed the signal back, "
        "the signal's own default action, which a shell reports as the same 143 / 130); the "
        "checkpoint left must verify, no temporary folder may remain, and no traceback be "
        "printed.",
        "",
        "| Case | Last line | Problems |",
        "|---|---|---|",
        *[f"| {c['case']} | `{c['said']}` | {'; '.join(c['problems']) or 'none'} |"
          for c in s["cases"]],
        "",
        "## Full disks",
        "",
        "Writes fail past a per-file size limit (`RLIMIT_FSIZE`, EFBIG) chosen to land inside "
        "each file written (train.bin; metrics.jsonl, model.safetensors, state.pt), and on "
        "small tmpfs disks (ENOSPC). Each must end with one line naming the space needed, "
        "exit 2, the previous data or checkpoint intact and no temporary file left.",
        "",
        "| Case | Last line | Problems |",
        "|---|---|---|",
        *[f"| {c['case']} | `{c['said']}` | {'; '.join(c['problems']) or 'none'} |"
          for c in d["cases"]],
        *([f"\n{d['skipped']}"] if d["skipped"] else []),
        "",
        "## Fuzzing",
        "",
        f"`tests/slow/test_fuzz.py` with `FUZZ_EXAMPLES={f['examples_each']}` (CI runs 40): "
        "whatever comes in, exit 0 or 2, never a traceback or a hang, nothing written outside "
        "the command's folder.",
        "",
        "| Input kind | Examples | Of which |",
        "|---|---|---|",
        *[f"| {name.removeprefix('test_').replace('_', ' ')} | {t['passing']} | "
          f"{', '.join(f'{k} {n}' for k, n in sorted(t['per_kind'].items())) or ''} |"
          for name, t in f["tests"].items() if t["passing"]],
        "",
        f"Problems: {f['problems'] or 'none'}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=54)
    parser.add_argument("--signals", type=int, default=3, help="signal points per signal")
    parser.add_argument("--fuzz-examples", type=int, default=500)
    args = parser.parse_args()
    start = time.perf_counter()
    results: dict[str, Any] = {"command": "python benchmarks/faults.py " + " ".join(sys.argv[1:]),
                               "machine": machine(), "date": date.today().isoformat(),
                               "provenance": provenance("float32")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"kill -9 x {args.kills}", flush=True)
        results["kills"] = timed(lambda: kills(work / "kills", args.kills))
        print("signals", flush=True)
        results["signals"] = timed(lambda: signals(work / "signals", args.signals))
        print("full disks", flush=True)
        results["disks"] = timed(lambda: full_disks(work / "disks"))
    print(f"fuzz x {args.fuzz_examples} per test", flush=True)
    results["fuzz"] = timed(lambda: fuzz(args.fuzz_examples))
    results["seconds"] = time.perf_counter() - start
    results["command"] = results["command"].strip()
    write_report(results)
    print(f"\nwrote {REPORT.relative_to(REPO)} and {RESULTS.relative_to(REPO)}")
    print(render(results).split("## kill -9")[0])


if __name__ == "__main__":
    main()
