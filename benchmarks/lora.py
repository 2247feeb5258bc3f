"""LoRA against full fine-tuning: memory, speed and checkpoint size, on GPT-2's shapes.

No GPT-2 weights can be downloaded here, so each base is a GPT-2-shaped model with random
weights, saved as a gptscratch checkpoint (the costs do not depend on the weights' values).
Every row is a real `gptscratch train --init-from BASE` in a fresh process, on tinyshakespeare
(`../shared/data/tinyshakespeare.txt`) with the GPT-2 tokenizer, fp32, no compile:

  124M  full fine-tuning | LoRA r=8 on attn | LoRA r=8 on attn + activation checkpointing
        batch 4 x 256, 4 steps (the first is warm-up), each row run 3 times, interleaved
        (every row once, then every row again), so the VM's slow phases fall on all alike
  1.5B  (GPT-2 XL's shape) full fine-tuning: the pre-flight estimate, which refuses it here;
        LoRA r=8 on attn + activation checkpointing at batch 1 x 256, 2 steps, once

It reports the trainable parameters, the median (and spread) of the steps' tokens/s, the
process's peak resident memory (ru_maxrss), the pre-flight estimate, and the size of a
checkpoint folder (`latest/`: weights or adapters, optimizer state, tokenizer).

    python benchmarks/lora.py            # ~15 minutes on 2 cores; needs ~30 GB of disk
    python benchmarks/lora.py --no-xl    # the 124M rows only (~8 minutes)
    python benchmarks/lora.py --quick --out /tmp/lora.json   # a tiny shape, the repository's
                                         # own corpus, once: that the script works (seconds)

Prints a table and writes benchmarks/results/lora.json (or --out), with its provenance. Run it
alone.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from provenance import provenance
from quality import machine  # the sibling benchmark script: one machine description

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"

SHAPES = {
    "124M": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
    "1.5B": dict(vocab_size=50257, block_size=1024, n_layer=48, n_head=25, n_embd=1600),
    "tiny": dict(vocab_size=50257, block_size=256, n_layer=1, n_head=2, n_embd=32),  # --quick
}
FIXTURE = REPO / "tests" / "fixtures" / "plays.txt"  # --quick's corpus: in the repository
COMMON = ["--dtype", "float32", "--no-compile", "--sample-tokens", "0", "--eval-sample-tokens",
          "0", "--log-interval", "1", "--eval-iters", "1", "--eval-interval", "1000",
          "--warmup-iters", "0", "--block-size", "256", "--dropout", "0", "--device", "cpu"]
LORA = ["--lora-rank", "8", "--lora-targets", "attn"]

# A fresh parent per row, so ru_maxrss of its children is that row's peak alone.
RUN = ("import resource, subprocess, sys\n"
       "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
       "sys.stdout.write(p.stdout[-4000:] + p.stderr[-6000:])\n"
       "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
       "print('RC', p.returncode)\n")


def make_base(shape: str, folder: Path) -> Path:
    """A GPT-2-shaped random model saved as a gptscratch checkpoint (in a subprocess, so its
    memory is gone before the rows run)."""
    code = (
        "import sys, torch\n"
        "from gptscratch.checkpoints.checkpoint import save_checkpoint\n"
        "from gptscratch.data.tokenizers import GPT2Tokenizer\n"
        "from gptscratch.model.config import ModelConfig\n"
        "from gptscratch.model.gpt import GPT\n"
        f"config = ModelConfig(**{SHAPES[shape]!r})\n"
        "torch.manual_seed(0)\n"
        "model = GPT(config)\n"
        "tok = GPT2Tokenizer()\n"
        "meta = {'model_config': config.to_dict(), 'step': 0, 'tokenizer_kind': tok.kind,\n"
        "        'tokenizer_fingerprint': tok.fingerprint()}\n"
        "save_checkpoint(sys.argv[1], model, tok, meta)\n")
    out = folder / f"base-{shape}"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True)
    return out


def prepare(folder: Path, corpus: Path) -> Path:
    out = folder / "data-gpt2"
    subprocess.run([sys.executable, "-m", "gptscratch", "prepare", "--data", str(corpus),
                    "--tokenizer", "gpt2", "--out", str(out)], check=True, capture_output=True)
    return out


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_row(base: Path, data: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "gptscratch", "train", "--init-from", str(base), "--data",
           str(data), "--out", str(out), *COMMON, *extra]
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", RUN, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - start
    text = p.stdout
    rc = int(re.search(r"^RC (-?\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    row: dict[str, Any] = {
        "rc": rc, "wall_s": round(wall, 1),
        "peak_rss_gib": round(int(re.search(r"MAXRSS_KB (\d+)", text).group(1))  # type: ignore[union-attr]
                              / 2**20, 2)}
    estimate = re.search(r"memory estimate per process: (.*?)\n", text)
    refused = re.search(r"error: (.*)", text)
    row["estimate"] = estimate.group(1) if estimate else None
    if rc != 0:
        row["error"] = refused.group(1) if refused else text[-800:]
        return row
    params = re.search(r"model: ([\d,]+) parameters", text)
    row["parameters"] = int(params.group(1).replace(",", "")) if params else None
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]  # skip warm-up
    row["tokens_per_s"] = speeds
    row["checkpoint_mib"] = round(folder_bytes(out / "latest") / 2**20, 1)
    return row


def trainable(out_extra: list[str], shape: str) -> int:
    from gptscratch.model.config import ModelConfig
    from gptscratch.training.memory import lora_parameter_count

    config = ModelConfig(**{**SHAPES[shape], "block_size": 256})
    if "--lora-rank" in out_extra:
        return lora_parameter_count(config, 8, "attn")
    return config.parameter_count()


def summarise(name: str, runs: list[dict[str, Any]], shape: str,
              extra: list[str]) -> dict[str, Any]:
    ok = [r for r in runs if r["rc"] == 0]
    entry: dict[str, Any] = {"row": name, "shape": shape, "flags": extra, "runs": runs,
                             "trainable_parameters": trainable(extra, shape)}
    if ok:
        per_run = [statistics.median(r["tokens_per_s"]) for r in ok]
        entry.update(
            tokens_per_s_median=round(statistics.median(per_run), 1),
            tokens_per_s_spread=[round(min(per_run), 1), round(max(per_run), 1)],
            peak_rss_gib_median=statistics.median(r["peak_rss_gib"] for r in ok),
            checkpoint_mib=ok[0]["checkpoint_mib"], estimate=ok[0]["estimate"])
    else:
        entry.update(refused=runs[0].get("error"), estimate=runs[0].get("estimate"))
    return entry


def the_plan(quick: bool, repeats: int, xl: bool) -> list[tuple[str, str, list[str], int]]:
    """(shape, row, flags, repeats) of every row, in the order they first run."""
    if quick:
        steps = ["--batch-size", "2", "--max-iters", "2"]
        return [("tiny", "full", steps, 1), ("tiny", "lora-r8-attn", [*steps, *LORA], 1)]
    steps = ["--batch-size", "4", "--max-iters", "4"]
    plan = [("124M", "full", steps, repeats), ("124M", "lora-r8-attn", [*steps, *LORA], repeats),
            ("124M", "lora-r8-attn-ckpt", [*steps, *LORA, "--activation-checkpointing"],
             repeats)]
    if xl:
        steps = ["--batch-size", "1", "--max-iters", "2"]
        plan += [("1.5B", "full", steps, 1),
                 ("1.5B", "lora-r8-attn-ckpt", [*steps, *LORA, "--activation-checkpointing"], 1)]
    return plan


def run_plan(plan: list[tuple[str, str, list[str], int]], tmp: Path,
             data: Path) -> list[dict[str, Any]]:
    """Every row of `plan`, a shape at a time (one base on disk at once); a shape's rows are
    interleaved: round i runs each of them once."""
    rows = []
    for shape in dict.fromkeys(p[0] for p in plan):
        base = make_base(shape, tmp)
        mine = [p for p in plan if p[0] == shape]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for _, name, _, _ in mine}
        for i in range(max(p[3] for p in mine)):
            for _, name, extra, repeats in mine:
                if i < repeats:
                    out = tmp / f"{shape}-{name}-{i}"
                    runs[name].append(run_row(base, data, out, extra))
                    subprocess.run(["rm", "-rf", str(out)], check=True)
        for _, name, extra, _ in mine:
            entry = summarise(name, runs[name], shape, extra)
            rows.append(entry)
            print(json.dumps({k: v for k, v in entry.items() if k != "runs"}), flush=True)
        subprocess.run(["rm", "-rf", str(base)], check=True)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'shape':6} {'row':20} {'trainable':>12} {'tok/s (median, spread)':>26} "
          f"{'peak RSS':>9} {'checkpoint':>11}")
    for r in rows:
        if "tokens_per_s_median" in r:
            lo, hi = r["tokens_per_s_spread"]
            print(f"{r['shape']:6} {r['row']:20} {r['trainable_parameters']:>12,} "
                  f"{r['tokens_per_s_median']:>12.1f} ({lo:.1f}-{hi:.1f})"
                  f"{r['peak_rss_gib_median']:>8.2f}G {r['checkpoint_mib']:>9.1f}M")
        else:
            print(f"{r['shape']:6} {r['row']:20} {r['trainable_parameters']:>12,}  refused: "
                  f"{str(r['refused'])[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-xl", action="store_true", help="skip the 1.5B rows")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny shape on the repository's corpus, once; writes only --out")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default benchmarks/results/lora.json)")
    args = parser.parse_args()
    if args.quick and args.out is None:
        sys.exit("error: --quick writes only to an explicit --out")
    corpus = FIXTURE if args.quick else CORPUS
    if not corpus.is_file():
        sys.exit(f"error: {corpus} not found; this benchmark needs ../shared/data")
    with tempfile.TemporaryDirectory(prefix="gptscratch-lora-") as tmp_name:
        tmp = Path(tmp_name)
        rows = run_plan(the_plan(args.quick, args.repeats, not args.no_xl), tmp,
                        prepare(tmp, corpus))
    print_table(rows)
    result = {"date": date.today().isoformat(), "machine": machine(),
              "command": "python benchmarks/lora.py " + " ".join(sys.argv[1:]),
              "provenance": provenance("float32"), "rows": rows}
    out = args.out or RESULTS / "lora.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
