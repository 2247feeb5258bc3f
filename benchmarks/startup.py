"""Start-up benchmark: how long a new user waits for `--help` and for a one-token sample.

Each row is a fresh process, run 5 times (median and spread): `gptscratch --help`, the
`--help` of every command, `sample --max-new-tokens 1` on a small `shakespeare-char`
checkpoint (trained here first, 20 steps), and, as the floor nothing in gptscratch can go
below, `python -c "import torch"`. Targets: every `--help` under 0.3 s, the one-token sample
under 1.5 s.

    python benchmarks/startup.py                        # this checkout
    python benchmarks/startup.py --src OTHER/src --label before   # another version's code

Prints a table and writes benchmarks/results/startup.json (results of several labels are
kept side by side). Run it alone: another busy process on this 2-core machine slows it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "startup.json"
COMMANDS = ["prepare", "train", "sample", "chat", "eval", "explain", "viz", "import-hf",
            "export-hf"]
TARGETS = {"help": 0.3, "sample": 1.5}


def timed(argv: list[str], env: dict[str, str], repeats: int) -> list[float]:
    """Wall seconds of `repeats` fresh processes running `argv`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def preset_checkpoint(env: dict[str, str], folder: Path) -> Path:
    """A 20-step shakespeare-char run (the preset's shape) to sample from."""
    run = folder / "run"
    subprocess.run([sys.executable, "-m", "gptscratch", "-q", "train", "--data", "shakespeare",
                    "--out", str(run), "--max-iters", "20", "--eval-interval", "20",
                    "--eval-iters", "2", "--warmup-iters", "2", "--sample-tokens", "0"],
                   env=env, check=True)
    return run


def rows(env: dict[str, str], ckpt: Path, repeats: int) -> list[dict[str, Any]]:
    gs = [sys.executable, "-m", "gptscratch"]
    cases: list[tuple[str, str, list[str]]] = [
        ("python -c 'import torch' (the floor)", "", [sys.executable, "-c", "import torch"]),
        ("gptscratch --help", "help", [*gs, "--help"]),
        *[(f"gptscratch {c} --help", "help", [*gs, c, "--help"]) for c in COMMANDS],
        ("gptscratch sample --max-new-tokens 1 (preset checkpoint)", "sample",
         [*gs, "-q", "sample", "--ckpt", str(ckpt), "--prompt", "ROMEO:",
          "--max-new-tokens", "1"]),
    ]
    out = []
    for name, kind, argv in cases:
        times = timed(argv, env, repeats)
        median = statistics.median(times)
        target = TARGETS.get(kind)
        out.append({"name": name, "median_s": round(median, 3), "min_s": round(min(times), 3),
                    "max_s": round(max(times), 3), "target_s": target,
                    "met": None if target is None else median < target})
        print(f"{name:60s} {median:6.2f} s  ({min(times):.2f}-{max(times):.2f})"
              + (f"  target < {target} s: {'met' if median < target else 'MISSED'}"
                 if target else ""), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO / "src",
                        help="the gptscratch source folder to measure (default: this checkout)")
    parser.add_argument("--label", default="current", help="name of this set of rows")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # The user's own cache, as a new user has it after the README's set-up.
        env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
        ckpt = preset_checkpoint(env, Path(tmp))
        result = {"label": args.label, "src": str(args.src), "date": str(date.today()),
                  "machine": f"{platform.processor() or platform.machine()}, "
                             f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
                  "repeats": args.repeats, "rows": rows(env, ckpt, args.repeats)}
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved[args.label] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)} ({args.label})")


if __name__ == "__main__":
    main()
