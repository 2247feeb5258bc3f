"""Training-speed benchmark: our GPT against Hugging Face's GPT2LMHeadModel and the hardware.

For a model shape (the shakespeare-char preset's, with GPT-2's architecture: its
`shakespeare-char-gpt2` twin; or GPT-2 124M) it times full training steps (forward,
cross-entropy, backward, gradient clipping, fused AdamW) with the same shape (biases on in
both, as GPT-2 has them), batch, data, optimizer and loss function, of:
  ours  fp32 eager | bf16 autocast eager | bf16 autocast + torch.compile | bf16, default malloc
  HF, like for like (the `-keep` rows): the fused tanh GELU (`gelu_pytorch_tanh`, the same
      `F.gelu(approximate="tanh")` kernel as ours) and our allocator setting; fp32 and bf16
      autocast, attn_implementation "eager" and "sdpa", and bf16 + torch.compile of each
  HF, as shipped (no suffix): GPT2Config's default GELU (`gelu_new`, tanh written out in
      Python ops) and the default allocator, eager only: what a user gets out of the box.

What is compared: the headline ratios put like with like: our bf16 eager against HF's best
like-for-like bf16 eager row, and our bf16 compiled against HF's best like-for-like bf16
compiled row (`ratios`, named in `headline_ratios`); never a compiled row against an eager
one. The as-shipped rows give extra, labelled ratios (`..._as_shipped`).

Each run of a configuration is a fresh subprocess, so peak memory and compile caches are its
own (torch.compile starts from an empty inductor cache: its first step is the cold-compile
cost). Every row runs `--repeats` times (default 3), the rows taking turns (all rows once,
then all again, each round starting one row later), so the VM's slow phases fall on every row
alike; the table and the JSON give
the median over the runs and the spread (min-max), the ratios are of medians, and
`ratio_ranges` spans the worst and best pairing of the two rows' runs. MFU is reported against
a bf16 (and fp32) 2048^3 matmul rate measured at the start; a figure above 100 % would say the
ceiling was read in a slow moment, so it is stored as null (`mfu.model_flops_utilisation`).

Our rows run with glibc's malloc set to keep freed memory (`keep_freed_memory`), as our
training loop does on CPU; `ours-bf16-nokeep` shows what that setting is worth.

    python benchmarks/training.py --shape preset     # ~15 minutes (14 rows x 3, AMX CPU)
    python benchmarks/training.py --shape 124m       # ~35 minutes (batch 4 x 256, 5 steps)

On a CPU without fast bf16 (no AMX or AVX512-BF16) the default rows are the fp32 ones: bf16
is emulated there (a 2048^3 bf16 matmul took minutes), which no user would train with.
    python benchmarks/training.py --quick --repeats 1 --out /tmp/training.json   # smoke test

Prints a table and writes the shape's entry in benchmarks/results/training.json (or --out;
--quick, 2 timed steps after 1 warm-up, writes only to an explicit --out). Run it alone.
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
from provenance import provenance
from quality import machine  # the sibling benchmark script: one machine description

from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT, lm_loss
from gptscratch.runtime.cpu import cpu_has_fast_bf16, cpu_supports_bf16, keep_freed_memory
from gptscratch.training.mfu import flops_per_token, measure_matmul_flops, model_flops_utilisation
from gptscratch.training.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# GPT-2's architecture at the preset's shape and batch: HF's GPT2LMHeadModel can only be GPT-2,
# and `shakespeare-char` itself now runs the modern recipe (rotary, RMSNorm, ...).
PRESET = get_preset("shakespeare-char-gpt2")
# name -> (model fields, batch B, sequence length T, measured steps, warm-up steps)
SHAPES: dict[str, tuple[dict[str, Any], int, int, int, int]] = {
    "preset": ({**PRESET.model, "vocab_size": 65, "bias": True, "dropout": 0.0},
               PRESET.train.optim.batch_size, PRESET.model["block_size"], 20, 5),
    # On 2 CPU cores a 124M step at 4 x 256 tokens already takes seconds; a GPU takes more.
    "124m": (dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                  bias=True, dropout=0.0), 4, 256, 5, 1),
}
OURS = ["ours-fp32", "ours-bf16", "ours-bf16-compile", "ours-bf16-nokeep"]
HF_LIKE_FOR_LIKE = ["hf-fp32-eager-keep", "hf-fp32-sdpa-keep", "hf-bf16-eager-keep",
                    "hf-bf16-sdpa-keep", "hf-bf16-eager-keep-compile",
                    "hf-bf16-sdpa-keep-compile"]
HF_AS_SHIPPED = ["hf-fp32-eager", "hf-fp32-sdpa", "hf-bf16-eager", "hf-bf16-sdpa"]
ROWS = OURS + HF_LIKE_FOR_LIKE + HF_AS_SHIPPED
QUICK_STEPS = (2, 1)  # --quick: timed steps, warm-up steps


def settings(row: str) -> dict[str, Any]:
    """What a row name means: whose model, precision, attention, allocator, compile, GELU."""
    hf = row.startswith("hf")
    keep = "-keep" in row if hf else not row.endswith("-nokeep")
    return {"impl": "hf" if hf else "ours", "bf16": "-bf16" in row,
            "attention": ("sdpa" if "-sdpa" in row else "eager") if hf else "auto",
            "allocator": "keep freed memory" if keep else "glibc default",
            "compiled": row.endswith("-compile"),
            "group": ("hf like for like" if keep else "hf as shipped") if hf else "ours"}


def hf_activation(row: str, fields: dict[str, Any]) -> str:
    """HF's activation_function for a row: the exact GELU when the shape asks for it; else the
    fused tanh kernel ours runs (like for like) or GPT2Config's default, gelu_new (as shipped)."""
    if fields.get("activation") == "gelu":
        return "gelu"
    return "gelu_pytorch_tanh" if settings(row)["group"] == "hf like for like" else "gelu_new"


def build(row: str, fields: dict[str, Any], device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    if row.startswith("ours"):
        return GPT(ModelConfig(**fields)).to(device)
    from transformers import GPT2Config, GPT2LMHeadModel

    config: dict[str, Any] = dict(
        vocab_size=fields["vocab_size"], n_positions=fields["block_size"],
        n_embd=fields["n_embd"], n_layer=fields["n_layer"], n_head=fields["n_head"],
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        activation_function=hf_activation(row, fields),
        use_cache=False, bos_token_id=0, eos_token_id=0,
        attn_implementation=settings(row)["attention"])
    model: Any = GPT2LMHeadModel(GPT2Config(**config))
    return model.to(device)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def shape_for(shape: str, device: torch.device, batch: int | None, seq_len: int | None,
              steps: int | None = None, warmup: int | None = None
              ) -> tuple[dict[str, Any], int, int, int, int]:
    """The shape's fields, batch B, length T and step counts; on a GPU the 124M shape trains at
    GPT-2's full context with a GPU-sized batch (and more steps), unless given."""
    fields, B, T, n_steps, n_warmup = SHAPES[shape]
    if device.type == "cuda" and shape == "124m":
        B, T, n_steps, n_warmup = 16, 1024, 20, 5
    return (fields, batch or B, seq_len or T, steps or n_steps,
            n_warmup if warmup is None else warmup)


def time_steps(model: torch.nn.Module, forward: Any, optimizer: torch.optim.Optimizer,
               vocab_size: int, shape: tuple[int, int], n: int, device: torch.device,
               bf16: bool, hf: bool) -> tuple[list[float], torch.Tensor]:
    """Time `n` full training steps on seeded random (B, T) batches: forward (an HF model
    takes `input_ids`), the shared `lm_loss`, backward, clipping, the optimizer's step and a
    sync. Returns each step's seconds and the last loss (gpu_check.py times its rows here too).
    """
    B, T = shape
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab_size, (n, B, T + 1), generator=gen)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(n):
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
    return times, loss


def run_row(row: str, shape: str, device: torch.device, batch: int | None = None,
            seq_len: int | None = None, steps: int | None = None, warmup: int | None = None
            ) -> dict[str, Any]:
    """Time one configuration (a row name, `settings` says what it means) in this process:
    returns ms/step, tokens/s, memory."""
    torch.set_flush_denormal(True)
    setting = settings(row)
    if device.type == "cpu" and setting["allocator"] == "keep freed memory":
        keep_freed_memory()
    fields, B, T, steps, warmup = shape_for(shape, device, batch, seq_len, steps, warmup)
    base_rss = rss_mb()
    model = build(row, fields, device)
    hf = setting["impl"] == "hf"
    forward: Any = torch.compile(model) if setting["compiled"] else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    times, loss = time_steps(model, forward, optimizer, fields["vocab_size"], (B, T),
                             steps + warmup, device, setting["bf16"], hf)
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


def run_child(row: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """One run of a row in a fresh process with an empty inductor cache (a cold compile)."""
    sizes = [f"--{name}={value}" for name, value in
             (("batch", args.batch), ("seq-len", args.seq_len), ("steps", args.steps),
              ("warmup", args.warmup)) if value is not None]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--shape", args.shape, "--device", args.device,
             "--child", row, *sizes], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(f"{row}: failed\n{out.stderr[-2000:]}", flush=True)
        return None
    r: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    r["process_s"] = round(time.perf_counter() - t, 1)
    return r


def label(row: str, fields: dict[str, Any]) -> str:
    """A row's meaning in words, for the table and the JSON."""
    s = settings(row)
    words = [s["impl"], "bf16" if s["bf16"] else "fp32",
             "compiled" if s["compiled"] else "not compiled"]
    if s["impl"] == "hf":
        words += [f"attn {s['attention']}", hf_activation(row, fields)]
    if s["allocator"] != "keep freed memory":
        words.append("default malloc")
    return ", ".join(words)


def aggregate(row: str, runs: list[dict[str, Any]], fields: dict[str, Any],
              ceiling: dict[str, float]) -> dict[str, Any]:
    """One row over its repeats: medians, min-max spreads, each run's figures, MFU."""
    def spread(key: str) -> tuple[float, float, float]:
        values = [r[key] for r in runs]
        return statistics.median(values), min(values), max(values)

    out: dict[str, Any] = {"row": row, "label": label(row, fields), **settings(row)}
    if settings(row)["impl"] == "hf":
        out["activation_function"] = hf_activation(row, fields)
    for key, digits in (("ms_per_step", 2), ("tokens_per_s", 0), ("first_step_s", 2),
                        ("peak_memory_mb", 0), ("process_s", 1)):
        median, low, high = spread(key)
        out[key] = round(median, digits) if digits else round(median)
        out[f"{key}_min"], out[f"{key}_max"] = low, high
    out.update(final_loss=runs[0]["final_loss"], flops_per_token=runs[0]["flops_per_token"],
               params=runs[0]["params"], repeats=len(runs),
               runs=[{k: r[k] for k in ("ms_per_step", "tokens_per_s", "first_step_s",
                                        "peak_memory_mb", "process_s")} for r in runs])
    for name in ("bf16", "fp32"):  # None: not measured, or above 100 % (a ceiling read low)
        mfu = model_flops_utilisation(out["tokens_per_s"], out["flops_per_token"],
                                      ceiling.get(name, 0.0), f"the {name} matmul ceiling")
        out[f"mfu_vs_{name}_ceiling"] = None if mfu is None else round(mfu, 4)
    return out


HEADLINE = ["ours_bf16_eager_over_hf_bf16_eager", "ours_bf16_compile_over_hf_bf16_compile"]
# name -> (our rows, HF's rows): the best median of each side; both sides compiled or both eager.
PAIRS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ours_bf16_eager_over_hf_bf16_eager": (("ours-bf16",),
                                           ("hf-bf16-eager-keep", "hf-bf16-sdpa-keep")),
    "ours_bf16_compile_over_hf_bf16_compile": (
        ("ours-bf16-compile",), ("hf-bf16-eager-keep-compile", "hf-bf16-sdpa-keep-compile")),
    "ours_fp32_over_hf_fp32": (("ours-fp32",), ("hf-fp32-eager-keep", "hf-fp32-sdpa-keep")),
    "ours_bf16_eager_over_hf_bf16_eager_as_shipped": (("ours-bf16",),
                                                      ("hf-bf16-eager", "hf-bf16-sdpa")),
    "ours_fp32_over_hf_fp32_as_shipped": (("ours-fp32",), ("hf-fp32-eager", "hf-fp32-sdpa")),
    "ours_best_over_ours_fp32": (("ours-bf16", "ours-bf16-compile"), ("ours-fp32",)),
    "ours_bf16_keep_over_nokeep": (("ours-bf16",), ("ours-bf16-nokeep",)),
}


def compute_ratios(results: list[dict[str, Any]]
                   ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each pair's ratio of median tokens/s, and its range over the two rows' runs."""
    by = {r["row"]: r for r in results}
    ratios: dict[str, float] = {}
    ranges: dict[str, list[float]] = {}
    for name, (mine, theirs) in PAIRS.items():
        a = max((by[k] for k in mine if k in by), key=lambda r: r["tokens_per_s"], default=None)
        b = max((by[k] for k in theirs if k in by), key=lambda r: r["tokens_per_s"],
                default=None)
        if a is None or b is None:
            continue
        ratios[name] = round(a["tokens_per_s"] / b["tokens_per_s"], 2)
        ranges[name] = [round(a["tokens_per_s_min"] / b["tokens_per_s_max"], 2),
                        round(a["tokens_per_s_max"] / b["tokens_per_s_min"], 2)]
    return ratios, ranges


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_table(results: list[dict[str, Any]], ratios: dict[str, float],
                ranges: dict[str, list[float]]) -> None:
    print(f"{'row':<27} {'ms/step':>9} {'(min-max)':>17} {'tok/s':>8} {'MFU bf16':>9} "
          f"{'MFU fp32':>9} {'peak MB':>8} {'1st step s':>10}  meaning")
    group = None
    order = ["ours", "hf like for like", "hf as shipped"]
    for r in sorted(results, key=lambda r: order.index(r["group"])):  # stable: --rows order
        if r["group"] != group:
            group = r["group"]
            print(f"-- {group}")
        spread = f"({r['ms_per_step_min']:.1f}-{r['ms_per_step_max']:.1f})"
        print(f"{r['row']:<27} {r['ms_per_step']:>9.1f} {spread:>17} {r['tokens_per_s']:>8,} "
              f"{percent(r['mfu_vs_bf16_ceiling']):>9} {percent(r['mfu_vs_fp32_ceiling']):>9} "
              f"{r['peak_memory_mb']:>8,} {r['first_step_s']:>10}  {r['label']}")
    print()
    for name, value in ratios.items():
        low, high = ranges[name]
        mark = "  <- headline" if name in HEADLINE else ""
        print(f"{name} = {value} (range {low}-{high}){mark}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="preset")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=None,
                        help="default: every row; on a CPU without fast bf16 (no AMX or "
                        "AVX512-BF16) the fp32 rows only, as bf16 is emulated there")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each row, each a fresh process (median and min-max)")
    parser.add_argument("--batch", type=int, default=None,
                        help="sequences per step (default: the shape's; 16 for 124M on CUDA)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="tokens per sequence (default: the shape's; 1024 for 124M on CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per run")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke test: {QUICK_STEPS[0]} timed steps after {QUICK_STEPS[1]} "
                        "warm-up, a 512^3 matmul ceiling; writes only to an explicit --out")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats ({args.repeats}) must be >= 1; try --repeats 3")
    if args.rows is None:
        fast_bf16 = args.device.startswith("cuda") or (cpu_has_fast_bf16() and cpu_supports_bf16())
        args.rows = ROWS if fast_bf16 else [r for r in ROWS if not settings(r)["bf16"]]
    if args.quick:
        args.steps = args.steps or QUICK_STEPS[0]
        args.warmup = QUICK_STEPS[1] if args.warmup is None else args.warmup
    return args


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    sizes = dict(batch=args.batch, seq_len=args.seq_len, steps=args.steps, warmup=args.warmup)
    if args.child:
        print(json.dumps(run_row(args.child, args.shape, device, **sizes)))
        return

    torch.set_flush_denormal(True)
    size = 512 if args.quick else 2048  # --quick: a smoke test; emulated bf16 is slow
    # The bf16 rate only where bf16 rows run: emulated (no AMX) it takes minutes to measure.
    dtypes = {"fp32": torch.float32}
    if any(settings(row)["bf16"] for row in args.rows):
        dtypes["bf16"] = torch.bfloat16
    ceiling = {name: measure_matmul_flops(device, dtype, size) for name, dtype in dtypes.items()}
    print(f"matmul ceiling ({size}^3): " + ", ".join(
        f"{name} {rate / 1e9:,.0f} GFLOP/s" for name, rate in ceiling.items()), flush=True)
    fields, B, T, steps, warmup = shape_for(args.shape, device, **sizes)
    runs: dict[str, list[dict[str, Any]]] = {row: [] for row in args.rows}
    for repeat in range(args.repeats):  # rows take turns: drift in the VM's speed hits all
        # ...and each round starts one row later, so no row is always the first after a pause
        for row in args.rows[repeat % len(args.rows):] + args.rows[:repeat % len(args.rows)]:
            r = run_child(row, args)
            if r is None:
                continue
            runs[row].append(r)
            print(f"[{repeat + 1}/{args.repeats}] {row:<27} {r['ms_per_step']:>9.1f} ms/step "
                  f"{r['tokens_per_s']:>8,} tok/s peak {r['peak_memory_mb']:>6,} MB  "
                  f"first step {r['first_step_s']} s", flush=True)
    results = [aggregate(row, runs[row], fields, ceiling) for row in args.rows if runs[row]]
    ratios, ranges = compute_ratios(results)
    print()
    print(f"shape {args.shape}: {fields['n_layer']} layers, {fields['n_head']} heads, "
          f"{fields['n_embd']} wide, vocab {fields['vocab_size']}, batch {B} x {T} tokens, "
          f"{steps} timed steps after {warmup} warm-up, median of {args.repeats} runs per row")
    print_table(results, ratios, ranges)
    report = {"benchmark": "training", "shape": args.shape, "date": date.today().isoformat(),
              "machine": machine(), "device": args.device,
              "provenance": provenance("float32 and bfloat16 rows"),
              "model": fields, "batch": B, "seq_len": T, "timed_steps": steps,
              "warmup_steps": warmup, "repeats": args.repeats,
              "matmul_ceiling_gflops": {k: round(v / 1e9) for k, v in ceiling.items()},
              "matmul_ceiling_size": size,
              "rows": results, "ratios": ratios, "ratio_ranges": ranges,
              "headline_ratios": HEADLINE}
    if args.quick and args.out is None:
        print("--quick: not saved (give --out to keep it)")
        return
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
