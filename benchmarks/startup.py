"""Start-up benchmark: how long a new user waits for `--help` and for a one-token sample.

Each row is a fresh process, run 5 times, interleaved (every row once per round; median and
range): `gptscratch --help`, the
`--help` of every command, `sample --max-new-tokens 1` on a small `shakespeare-char`
checkpoint (trained here first, 20 steps), and, as the floor nothing in gptscratch can go
below, `python -c "import torch"`. Targets: every `--help` under 0.3 s, the one-token sample
under 1.5 s.

    python benchmarks/startup.py                        # this checkout
    python benchmarks/startup.py --src OTHER/src --label before   # another version's code
    python benchmarks/startup.py --quick --out /tmp/startup.json   # two rows, once

Prints a table and writes benchmarks/results/startup.json (or --out; results of several labels
are kept side by side), with its provenance. Run it alone: another busy process on this 2-core
machine slows it.
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

from provenance import provenance

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "startup.json"
COMMANDS = ["prepare", "train", "sample", "chat", "eval", "explain", "viz", "import-hf",
            "export-hf"]
TARGETS = {"help": 0.3, "sample": 1.5}


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one fresh process running `argv`."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def preset_checkpoint(env: dict[str, str], folder: Path) -> Path:
    """A 20-step shakespeare-char run (the preset's shape) to sample from."""
    run = folder / "run"
    subprocess.run([sys.executable, "-m", "gptscratch", "-q", "train", "--data", "shakespeare",
                    "--out", str(run), "--max-iters", "20", "--eval-interval", "20",
                    "--eval-iters", "2", "--warmup-iters", "2", "--sample-tokens", "0"],
                   env=env, check=True)
    return run


def rows(env: dict[str, str], ckpt: Path, repeats: int, quick: bool) -> list[dict[str, Any]]:
    """Every case `repeats` times, round by round (each round runs every case once)."""
    gs = [sys.executable, "-m", "gptscratch"]
    cases: list[tuple[str, str, list[str]]] = [
        ("python -c 'import torch' (the floor)", "", [sys.executable, "-c", "import torch"]),
        ("gptscratch --help", "help", [*gs, "--help"]),
        *[(f"gptscratch {c} --help", "help", [*gs, c, "--help"]) for c in COMMANDS],
        ("gptscratch sample --max-new-tokens 1 (preset checkpoint)", "sample",
         [*gs, "-q", "sample", "--ckpt", str(ckpt), "--prompt", "ROMEO:",
          "--max-new-tokens", "1"]),
    ]
    if quick:
        cases = [cases[1], cases[-1]]
    runs: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(repeats):
        for name, _, argv in cases:
            runs[name].append(timed(argv, env))
    out = []
    for name, kind, _ in cases:
        times = runs[name]
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
    parser.add_argument("--quick", action="store_true",
                        help="`--help` and the one-token sample, once; writes only --out")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results file (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args()
    if args.quick and args.out is None:
        sys.exit("error: --quick writes only to an explicit --out")
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        # The user's own cache, as a new user has it after the README's set-up.
        env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
        ckpt = preset_checkpoint(env, Path(tmp))
        result = {"label": args.label, "src": str(args.src), "date": str(date.today()),
                  "machine": f"{platform.processor() or platform.machine()}, "
                             f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
                  "provenance": provenance("float32"), "repeats": repeats,
                  "rows": rows(env, ckpt, repeats, args.quick)}
    out = args.out or RESULTS
    saved = json.loads(out.read_text()) if out.exists() else {}
    saved[args.label] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"wrote {out} ({args.label})")


if __name__ == "__main__":
    main()
