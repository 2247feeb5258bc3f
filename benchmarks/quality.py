"""Quality benchmark: val loss of the shakespeare-char preset after 5 minutes of training.

Trains on ../shared/data/tinyshakespeare.txt (the classic char-level corpus; last 10% held out)
and reports the val loss over the whole val split. As a reference it also trains, in the same
script, our GPT with nanoGPT's published CPU configuration (4 layers, 4 heads, 128 wide,
context 64, batch 12, lr 1e-3, 2000 iterations, no dropout), which reached 1.89 in nanoGPT's
own run on this machine.

    python benchmarks/quality.py                      # both runs, ~6.5 minutes
    python benchmarks/quality.py --only preset --set n_layer=6 --set learning_rate=3e-3

Prints a table and writes benchmarks/results/quality.json. Run it alone: another busy process
on this 2-core machine slows training several-fold.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

from gptscratch import api
from gptscratch.training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
RESULTS = REPO / "benchmarks" / "results"

NANOGPT_CPU = dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False,
                   batch_size=12, max_iters=2000, learning_rate=1e-3, min_lr=1e-4,
                   warmup_iters=100, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                   eval_interval=2000, eval_iters=20, log_interval=200, max_time=0.0,
                   dtype="float32")


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


def run(name: str, overrides: dict[str, Any], work: Path) -> dict[str, Any]:
    out = work / name
    start = time.perf_counter()
    result = api.train("shakespeare-char", CORPUS, out, overrides=overrides)
    wall = time.perf_counter() - start
    full = api.evaluate(out / "latest")
    records = read_metrics(out / "metrics.jsonl")
    speeds = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    speeds = speeds[1:] or speeds  # the first window includes start-up
    meta = json.loads((out / "latest" / "checkpoint.json").read_text())
    return {
        "name": name, "overrides": overrides, "steps": result.step, "wall_s": round(wall, 1),
        "train_seconds": round(result.elapsed, 1),
        "val_loss_estimate": round(result.val_loss, 4),
        "val_loss_full_split": round(full.loss, 4),
        "val_bits_per_byte": round(full.bits_per_byte or 0.0, 4),
        "median_tokens_per_s": round(sorted(speeds)[len(speeds) // 2]) if speeds else None,
        "precision": meta["precision"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["preset", "nanogpt"], default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a preset field (repeatable)")
    parser.add_argument("--max-time", type=float, default=300.0,
                        help="wall-clock training budget of the preset run (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_flush_denormal(True)

    preset = {"max_time": args.max_time}
    preset.update({k: _parse_value(v) for k, v in (s.split("=", 1) for s in args.set)})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "nanogpt"):
            rows.append(run("nanogpt-cpu-config", dict(NANOGPT_CPU), work))
        if args.only in (None, "preset"):
            rows.append(run("shakespeare-char", preset, work))
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{'run':<22} {'steps':>6} {'train s':>8} {'tok/s':>8} {'precision':>9} "
          f"{'val (full)':>10} {'val bpb':>8}")
    for r in rows:
        print(f"{r['name']:<22} {r['steps']:>6} {r['train_seconds']:>8} "
              f"{r['median_tokens_per_s'] or '-':>8} {r['precision']:>9} "
              f"{r['val_loss_full_split']:>10} {r['val_bits_per_byte']:>8}")
    if len(rows) == 2:
        ratio = rows[0]["val_loss_full_split"] / rows[1]["val_loss_full_split"]
        print(f"\nnanoGPT-config val loss / preset val loss = {ratio:.3f}")
    report = {
        "benchmark": "quality", "date": date.today().isoformat(),
        "machine": machine(),
        "corpus": str(CORPUS.name), "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
