"""Quality benchmark: val loss of the shakespeare-char preset after 5 minutes of training.

Trains on ../shared/data/tinyshakespeare.txt (the classic char-level corpus; last 10% held out)
and reports the val loss over the whole val split. As a reference it also trains, in the same
script, our GPT with nanoGPT's published CPU configuration (4 layers, 4 heads, 128 wide,
context 64, batch 12, lr 1e-3 decaying to 1e-4, 100 warm-up steps, no dropout, fp32), which
reached 1.89 after its 2000 iterations in nanoGPT's own run on this machine.

What is compared: the two runs get the same wall-clock training budget (the preset's
`max_time`, 300 s by default, evaluations during training included, as both count them), so
the loss ratio compares equal compute on the same machine, not 2000 reference iterations
(~74 s here) against 300 s. The reference's `max_iters` is only a cap (REFERENCE_MAX_ITERS)
far above the steps it can take in the budget: the cosine decay follows the larger of the
share of steps and the share of time done (`training/loop.py` `learning_rate`), so with a cap
that never binds, the reference's learning rate, like the preset's, reaches min_lr exactly when
its time ends. Both runs' steps and training seconds are printed and saved (`steps`,
`train_seconds`, `max_time`, `max_steps`, `ended_by`).

    python benchmarks/quality.py                      # both runs, ~11 minutes
    python benchmarks/quality.py --only preset --set n_layer=6 --set learning_rate=3e-3
    python benchmarks/quality.py --only preset --builtin --max-time 270 \
        --out benchmarks/results/quality_builtin.json    # the README's main job, timed
    python benchmarks/quality.py --quick --out /tmp/quality.json   # 3 s each on the repository's
                                                                   # own small corpus: it works

Prints a table and writes benchmarks/results/quality.json (or --out), with its provenance.
Run it alone: another busy process on this 2-core machine slows training several-fold.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from provenance import provenance

from gptscratch import api
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import count_params
from gptscratch.training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
FIXTURE = REPO / "tests" / "fixtures" / "plays.txt"  # --quick's corpus: in the repository
RESULTS = REPO / "benchmarks" / "results"

# nanoGPT's config/train_shakespeare_char.py with its README's CPU overrides, as published
# (2000 iterations, lr decaying over all of them); `reference_overrides` swaps the iteration
# count for the preset's time budget.
NANOGPT_CPU = dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False,
                   batch_size=12, max_iters=2000, learning_rate=1e-3, min_lr=1e-4,
                   warmup_iters=100, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                   eval_interval=2000, eval_iters=20, log_interval=200, max_time=0.0,
                   dtype="float32")
# A cap on the reference's steps that the clock always reaches first: ~27 steps/s here (2000 in
# 74 s), so ~8,000 in 300 s; even 100x faster hardware stays under it, and while the share of
# steps done stays below the share of time, the time drives the cosine decay.
REFERENCE_MAX_ITERS = 10_000_000


def reference_overrides(max_time: float) -> dict[str, Any]:
    """nanoGPT's CPU configuration, trained for `max_time` seconds (the preset's budget)."""
    return {**NANOGPT_CPU, "max_time": max_time, "max_iters": REFERENCE_MAX_ITERS}


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
    threads = torch.get_num_threads()
    return f"{name}, {os.cpu_count()} CPUs, {threads} threads, torch {torch.__version__}"


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(name: str, overrides: dict[str, Any], work: Path,
        corpus: Path | str = CORPUS) -> dict[str, Any]:
    out = work / name
    start = time.perf_counter()
    result = api.train("shakespeare-char", corpus, out, overrides=overrides)
    wall = time.perf_counter() - start
    full = api.evaluate(out / "latest")
    records = read_metrics(out / "metrics.jsonl")
    speeds = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    speeds = speeds[1:] or speeds  # the first window includes start-up
    meta = json.loads((out / "latest" / "checkpoint.json").read_text())
    max_steps = int(meta["max_steps"])
    shape = {k: meta["model_config"][k] for k in ("n_layer", "n_embd", "n_head", "block_size")}
    return {
        "name": name, "overrides": overrides, "seed": overrides.get("seed"), "shape": shape,
        "params": count_params(ModelConfig(**meta["model_config"])),
        "vocab_size": meta["model_config"]["vocab_size"], "sizing": meta.get("sizing"),
        "steps": result.step, "wall_s": round(wall, 1),
        "train_seconds": round(result.elapsed, 1),
        "max_time": overrides.get("max_time"), "max_steps": max_steps,
        "ended_by": "max_iters cap" if result.step >= max_steps else "time budget",
        "val_loss_estimate": round(result.val_loss, 4),
        "val_loss_full_split": round(full.loss, 4),
        "val_bits_per_byte": round(full.bits_per_byte or 0.0, 4),
        "median_tokens_per_s": round(sorted(speeds)[len(speeds) // 2]) if speeds else None,
        "precision": meta["precision"],
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run name: the median and range of the whole-split val loss over its seeds."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        losses = sorted(r["val_loss_full_split"] for r in rows if r["name"] == name)
        out[name] = {"seeds": len(losses), "median": round(statistics.median(losses), 4),
                     "min": losses[0], "max": losses[-1]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["preset", "nanogpt"], default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a preset field (repeatable)")
    parser.add_argument("--max-time", type=float, default=300.0,
                        help="wall-clock training budget of each run, the preset's and the "
                        "reference's (seconds)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default benchmarks/results/quality.json)")
    parser.add_argument("--builtin", action="store_true",
                        help="train and score on the built-in corpus (38 plays, the main job's) "
                             "instead of tinyshakespeare")
    parser.add_argument("--seeds", default="1337",
                        help="seeds, comma-separated: each run once per seed, the runs taking "
                             "turns (median and range reported)")
    parser.add_argument("--quick", action="store_true",
                        help="3 s a run on the repository's small corpus; writes only --out")
    args = parser.parse_args()
    if args.quick and args.out is None:
        parser.error("--quick writes only to an explicit --out")
    out = args.out or RESULTS / "quality.json"
    corpus: Path | str = FIXTURE if args.quick else "shakespeare" if args.builtin else CORPUS
    if args.quick:
        args.max_time = 3.0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_flush_denormal(True)

    preset = {"max_time": args.max_time}
    preset.update({k: _parse_value(v) for k, v in (s.split("=", 1) for s in args.set)})
    budget = float(preset["max_time"])  # the reference gets the preset's budget, --set included
    if budget <= 0:
        parser.error(f"max_time ({budget:g}) must be > 0: both runs train for that many seconds")
    seeds = [int(x) for x in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for seed in seeds:  # the runs take turns, so a slow spell falls on both
            tag = f"seed{seed}"
            if args.only in (None, "nanogpt"):
                rows.append(run("nanogpt-cpu-config",
                                {**reference_overrides(budget), "seed": seed}, work / tag,
                                corpus))
            if args.only in (None, "preset"):
                rows.append(run("shakespeare-char", {**preset, "seed": seed}, work / tag,
                                corpus))
            shutil.rmtree(work / tag, ignore_errors=True)

    print()
    print(f"{'run':<22} {'seed':>5} {'shape':>12} {'steps':>6} {'train s':>8} {'tok/s':>8} "
          f"{'precision':>9} {'val (full)':>10} {'val bpb':>8}")
    for r in rows:
        shape = f"{r['shape']['n_layer']}x{r['shape']['n_embd']}"
        print(f"{r['name']:<22} {r['seed']:>5} {shape:>12} {r['steps']:>6} "
              f"{r['train_seconds']:>8} {r['median_tokens_per_s'] or '-':>8} "
              f"{r['precision']:>9} {r['val_loss_full_split']:>10} {r['val_bits_per_byte']:>8}")
    print()
    for r in rows:
        print(f"{r['name']} (seed {r['seed']}): {r['steps']} steps in {r['train_seconds']} s "
              f"of training (budget {r['max_time']} s, cap {r['max_steps']} steps; ended by "
              f"{r['ended_by']})")
    medians = summary(rows)
    report: dict[str, Any] = {
        "benchmark": "quality", "date": date.today().isoformat(),
        "machine": machine(),
        "provenance": provenance("mixed" if len({r["precision"] for r in rows}) > 1
                                 else rows[0]["precision"] if rows else "n/a"),
        "corpus": "builtin" if args.builtin else Path(corpus).name, "time_budget_s": budget,
        "seeds": seeds, "runs": rows,
        "summary": medians,
    }
    for name, m in medians.items():
        print(f"{name}: val loss median {m['median']} ({m['min']}-{m['max']}, "
              f"{m['seeds']} seed(s))")
    if len(medians) == 2:
        ratio = (medians["shakespeare-char"]["median"]
                 / medians["nanogpt-cpu-config"]["median"])
        report["preset_over_nanogpt_config_val_loss"] = round(ratio, 4)
        print(f"\npreset val loss / nanoGPT-config val loss = {ratio:.3f} (medians; same "
              f"{budget:g} s training budget for both; target <= 0.92)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
