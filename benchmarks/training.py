"""Training-speed benchmark: our GPT against Hugging Face's GPT2LMHeadModel and the hardware.

For a model shape (the shakespeare-char preset, or GPT-2 124M) it times full training steps
(forward, cross-entropy, backward, gradient clipping, fused AdamW) of:
  ours  fp32 eager | bf16 autocast eager | bf16 autocast + torch.compile
  HF    fp32 and bf16 autocast, each with attn_implementation "eager" and "sdpa"
with the same shape (biases on in both, as GPT-2 has them), batch, data, optimizer and loss
function. Each configuration runs in a fresh subprocess, so peak memory and compile caches are
its own (torch.compile starts from an empty inductor cache: its time is the cold-compile cost).
MFU is reported against a bf16 (and fp32) 2048^3 matmul rate measured at the start.

Our rows run with glibc's malloc set to keep freed memory (`keep_freed_memory`), as our
training loop does on CPU; `ours-bf16-nokeep` shows what that setting is worth. HF rows run as
a user would run them (the default allocator) and, as `-keep` rows, with the same setting, so
the comparison can be read both ways.

    python benchmarks/training.py --shape preset     # ~4 minutes here (11 rows)
    python benchmarks/training.py --shape 124m       # ~9 minutes (batch 4 x 256, 5 steps)

Prints a table and writes the shape's entry in benchmarks/results/training.json. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from quality import machine  # the sibling benchmark script: one machine description

from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT, lm_loss
from gptscratch.runtime.cpu import keep_freed_memory
from gptscratch.training.mfu import flops_per_token, measure_matmul_flops
from gptscratch.training.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

PRESET = get_preset("shakespeare-char")
# name -> (model fields, batch B, sequence length T, measured steps, warm-up steps)
SHAPES: dict[str, tuple[dict[str, Any], int, int, int, int]] = {
    "preset": ({**PRESET.model, "vocab_size": 65, "bias": True, "dropout": 0.0},
               PRESET.train.batch_size, PRESET.model["block_size"], 20, 5),
    # On 2 CPU cores a 124M step at 4 x 256 tokens already takes seconds; a GPU takes more.
    "124m": (dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                  bias=True, dropout=0.0), 4, 256, 5, 1),
}
ROWS = ["ours-fp32", "ours-bf16", "ours-bf16-compile", "ours-bf16-nokeep", "hf-fp32-eager",
        "hf-fp32-sdpa", "hf-bf16-eager", "hf-bf16-sdpa", "hf-fp32-sdpa-keep",
        "hf-bf16-eager-keep", "hf-bf16-sdpa-keep"]


def build(row: str, fields: dict[str, Any], device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    if row.startswith("ours"):
        return GPT(ModelConfig(**fields)).to(device)
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=fields["vocab_size"], n_positions=fields["block_size"],
        n_embd=fields["n_embd"], n_layer=fields["n_layer"], n_head=fields["n_head"],
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        activation_function="gelu" if fields.get("activation") == "gelu" else "gelu_new",
        use_cache=False, bos_token_id=0, eos_token_id=0,
        attn_implementation="sdpa" if "sdpa" in row else "eager")
    return GPT2LMHeadModel(config).to(device)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def shape_for(shape: str, device: torch.device, batch: int | None, seq_len: int | None
              ) -> tuple[dict[str, Any], int, int, int, int]:
    """The shape's fields, batch B, length T and step counts; on a GPU the 124M shape trains at
    GPT-2's full context with a GPU-sized batch (and more steps), unless given."""
    fields, B, T, steps, warmup = SHAPES[shape]
    if device.type == "cuda" and shape == "124m":
        B, T, steps, warmup = 16, 1024, 20, 5
    return fields, batch or B, seq_len or T, steps, warmup


def run_row(row: str, shape: str, device: torch.device, batch: int | None = None,
            seq_len: int | None = None) -> dict[str, Any]:
    """Time one configuration in this process: returns ms/step, tokens/s, memory."""
    torch.set_flush_denormal(True)
    if device.type == "cpu" and ((row.startswith("ours") and not row.endswith("nokeep"))
                                 or row.endswith("-keep")):
        keep_freed_memory()
    fields, B, T, steps, warmup = shape_for(shape, device, batch, seq_len)
    base_rss = rss_mb()
    model = build(row, fields, device)
    hf = row.startswith("hf")
    forward: Any = torch.compile(model) if row.endswith("compile") else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    bf16 = "bf16" in row
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, fields["vocab_size"], (steps + warmup, B, T + 1), generator=gen)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(steps + warmup):
        x, y = data[i, :, :-1].to(device), data[i, :, 1:].to(device)
        t = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            logits = forward(input_ids=x).logits if hf else forward(x)
            loss = lm_loss(logits, y)  # the same loss function for both models
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # wait for the step (CUDA is asynchronous)
        times.append(time.perf_counter() - t)
    ms = statistics.median(times[warmup:]) * 1000
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else rss_mb() - base_rss)
    n_params = sum(p.numel() for p in model.parameters())
    n_params -= fields["block_size"] * fields["n_embd"]  # the position embedding: no matmul
    flops_tok = flops_per_token(ModelConfig(**{**fields, "block_size": T}), n_params)
    return {"row": row, "ms_per_step": round(ms, 2), "tokens_per_s": round(B * T / ms * 1000),
            "first_step_s": round(times[0], 2), "peak_memory_mb": round(peak),
            "final_loss": round(loss.item(), 4), "flops_per_token": flops_tok,
            "params": n_params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="preset")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=ROWS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--batch", type=int, default=None,
                        help="sequences per step (default: the shape's; 16 for 124M on CUDA)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="tokens per sequence (default: the shape's; 1024 for 124M on CUDA)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.child:
        print(json.dumps(run_row(args.child, args.shape, device, args.batch, args.seq_len)))
        return

    torch.set_flush_denormal(True)
    ceiling = {name: measure_matmul_flops(device, dtype)
               for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    print(f"matmul ceiling (2048^3): bf16 {ceiling['bf16'] / 1e9:,.0f} GFLOP/s, "
          f"fp32 {ceiling['fp32'] / 1e9:,.0f} GFLOP/s", flush=True)
    fields, B, T, steps, warmup = shape_for(args.shape, device, args.batch, args.seq_len)
    sizes = [*(["--batch", str(args.batch)] if args.batch else []),
             *(["--seq-len", str(args.seq_len)] if args.seq_len else [])]
    results = []
    for row in args.rows:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}  # a cold compile
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, __file__, "--shape", args.shape, "--device", args.device,
                 "--child", row, *sizes], env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{row}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["process_s"] = round(time.perf_counter() - t, 1)
        model_flops = r["tokens_per_s"] * r["flops_per_token"]
        r["mfu_vs_bf16_ceiling"] = round(model_flops / ceiling["bf16"], 4)
        r["mfu_vs_fp32_ceiling"] = round(model_flops / ceiling["fp32"], 4)
        results.append(r)
        print(f"{row:<18} {r['ms_per_step']:>9.1f} ms/step {r['tokens_per_s']:>8,} tok/s "
              f"MFU(bf16 ceiling) {100 * r['mfu_vs_bf16_ceiling']:5.1f}% "
              f"peak {r['peak_memory_mb']:>6,} MB  first step {r['first_step_s']} s",
              flush=True)

    by = {r["row"]: r["tokens_per_s"] for r in results}

    def best(*rows: str) -> int:
        return max((by[k] for k in rows if k in by), default=0)

    ratios: dict[str, float] = {}
    pairs = {
        "ours_best_bf16_over_hf_best_bf16": (
            best("ours-bf16", "ours-bf16-compile"), best("hf-bf16-eager", "hf-bf16-sdpa")),
        "ours_best_bf16_over_hf_best_bf16_keep": (
            best("ours-bf16", "ours-bf16-compile"),
            best("hf-bf16-eager-keep", "hf-bf16-sdpa-keep")),
        "ours_fp32_over_hf_best_fp32": (best("ours-fp32"), best("hf-fp32-eager", "hf-fp32-sdpa")),
        "ours_fp32_over_hf_fp32_sdpa_keep": (best("ours-fp32"), best("hf-fp32-sdpa-keep")),
        "ours_best_over_ours_fp32": (best("ours-bf16", "ours-bf16-compile"), best("ours-fp32")),
        "ours_bf16_keep_over_nokeep": (best("ours-bf16"), best("ours-bf16-nokeep")),
    }
    for name, (a, b) in pairs.items():
        if a and b:
            ratios[name] = round(a / b, 2)
    print()
    print(f"shape {args.shape}: {fields['n_layer']} layers, {fields['n_head']} heads, "
          f"{fields['n_embd']} wide, vocab {fields['vocab_size']}, batch {B} x {T} tokens, "
          f"{steps} timed steps after {warmup} warm-up")
    print(f"{'row':<18} {'ms/step':>9} {'tok/s':>9} {'MFU bf16':>9} {'MFU fp32':>9} "
          f"{'peak MB':>8} {'1st step s':>10}")
    for r in results:
        print(f"{r['row']:<18} {r['ms_per_step']:>9.1f} {r['tokens_per_s']:>9,} "
              f"{100 * r['mfu_vs_bf16_ceiling']:>8.1f}% {100 * r['mfu_vs_fp32_ceiling']:>8.1f}% "
              f"{r['peak_memory_mb']:>8,} {r['first_step_s']:>10}")
    for k, v in ratios.items():
        print(f"{k} = {v}")
    report = {"benchmark": "training", "shape": args.shape, "date": date.today().isoformat(),
              "machine": machine(), "device": args.device,
              "model": fields, "batch": B, "seq_len": T, "timed_steps": steps,
              "warmup_steps": warmup,
              "matmul_ceiling_gflops": {k: round(v / 1e9) for k, v in ceiling.items()},
              "rows": results, "ratios": ratios}
    # One file for all shapes: each invocation replaces its own shape's entry.
    out = args.out or RESULTS / "training.json"
    try:
        whole = json.loads(out.read_text())
    except (OSError, ValueError):
        whole = {}
    whole.setdefault("benchmark", "training")
    whole.setdefault("shapes", {})[args.shape] = report
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(whole, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
