"""Import / export of Hugging Face GPT-2 at real sizes: time, peak memory, logit agreement.

Offline, so the weights are random: transformers builds a GPT-2 of each requested size with
its own init and saves it. Each phase runs in its own Python process (so its peak RSS is its
own), and transformers' `AutoModelForCausalLM.from_pretrained` of the same folder is the peer
for the timings.

What the agreement phases compare, on a full 1024-token context and a 20-token greedy
continuation of its first 8 tokens, ours (imported, then `api.load`) against transformers'
model of the exported folder:
- parity, "compare logits and greedy tokens": both in float32, asked for explicitly (our
  `load()` picks bf16 by default on CPUs with AMX for models at least 512 wide, and
  transformers is given `dtype=torch.float32`); `max_abs_logit_diff` is then the error of the
  conversion itself, and `greedy_equal` whether the continuations match.
- the bf16 difference, "compare at bfloat16": ours loaded with dtype="bfloat16" (what `load()`
  picks by default on such CPUs) against transformers in bfloat16
  (`max_abs_logit_diff_vs_hf_bf16`, `greedy_equal_vs_hf_bf16`) and against the float32
  reference (`max_abs_logit_diff_vs_fp32`): the rounding of bf16, not a conversion error.
  `max_abs_logit` gives the logits' own scale.
Both are in the JSON rows and the printed table.

The whole sequence of phases runs `--repeats` times (3; a round runs every phase once, so the
rounds interleave): a phase's row holds the median round's figures, with every round's seconds
(`seconds_runs`) and their range (`seconds_range`).

    python benchmarks/hf_interop.py                      # gpt2 (124M), ~4 minutes
    python benchmarks/hf_interop.py --sizes gpt2 gpt2-medium
    python benchmarks/hf_interop.py --quick --out /tmp/h.json   # a tiny GPT-2, once, every
                                                                # phase in one process

Prints a table and writes benchmarks/results/hf_interop.json (or --out), with its provenance.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from provenance import provenance

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SIZES = {"tiny": dict(n_embd=64, n_layer=2, n_head=2),  # for --quick only
         "gpt2": dict(n_embd=768, n_layer=12, n_head=12),
         "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16),
         "gpt2-large": dict(n_embd=1280, n_layer=36, n_head=20),
         "gpt2-xl": dict(n_embd=1600, n_layer=48, n_head=25)}

# Each phase: Python source run in a fresh process; it prints one JSON line of results.
PRELUDE = """
import json, resource, sys, time
import torch
torch.set_flush_denormal(True)
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
IDS = torch.randint(0, 50257, (1, 1024), generator=torch.Generator().manual_seed(0))


def agreement(ours, hf):
    \"\"\"Max abs difference of the two models' logits on IDS, in float32 (the models' own
    dtype in the forward), and whether 20 greedy tokens after IDS[:, :8] are equal.\"\"\"
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        ours_logits, hf_logits = ours(IDS).float(), hf(IDS).logits.float()
        diff = (ours_logits - hf_logits).abs().max().item()
        prompt, seq = IDS[:, :8], IDS[:, :8]
        for _ in range(20):
            seq = torch.cat([seq, ours(seq)[:, -1:].argmax(-1)], dim=1)
        theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                             do_sample=False, pad_token_id=0)
    return {"max_abs_logit_diff": diff, "max_abs_logit": hf_logits.abs().max().item(),
            "greedy_equal": seq.tolist() == theirs.tolist()}
"""
EPILOGUE = """
out["seconds"] = time.perf_counter() - t0
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""
PHASES = {
    "create (transformers, random init)": """
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config(**args["shape"])).save_pretrained(args["hf"])
out = {}
""",
    "peer: transformers from_pretrained": """
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(args["hf"])
out = {"params": sum(p.numel() for p in m.parameters())}
""",
    "gptscratch import-hf": """
from gptscratch import api
api.import_hf(args["hf"], args["ours"])
out = {}
""",
    "gptscratch load (for sampling)": """
from gptscratch import api
m = api.load(args["ours"], "cpu").model  # the default dtype ("auto"), as `sample` loads
out = {"params": m.num_params(non_embedding=False),
       "dtype": str(m.transformer.wte.weight.dtype).removeprefix("torch.")}
""",
    "gptscratch export-hf": """
from gptscratch import api
api.export_hf(args["ours"], args["exported"])
out = {}
""",
    "compare logits and greedy tokens": """
from transformers import AutoModelForCausalLM
from gptscratch import api
ours = api.load(args["ours"], "cpu", dtype="float32").model
hf = AutoModelForCausalLM.from_pretrained(args["exported"], dtype=torch.float32).eval()
out = {"dtype": "float32", **agreement(ours, hf)}
""",
    "compare at bfloat16": """
from transformers import AutoModelForCausalLM
from gptscratch import api
reference = AutoModelForCausalLM.from_pretrained(args["exported"], dtype=torch.float32).eval()
with torch.no_grad():
    fp32_logits = reference(IDS).logits
del reference
from gptscratch.errors import UserError
try:
    ours = api.load(args["ours"], "cpu", dtype="bfloat16").model
except UserError as e:  # a CPU without bf16: say so, and let the other phases stand
    print(json.dumps({"dtype": "bfloat16", "skipped": str(e), "seconds": 0.0,
                      "peak_rss_mb": 0.0}))
    sys.exit(0)
hf = AutoModelForCausalLM.from_pretrained(args["exported"], dtype=torch.bfloat16).eval()
bf16 = agreement(ours, hf)
with torch.no_grad():
    vs_fp32 = (ours(IDS).float() - fp32_logits).abs().max().item()
out = {"dtype": "bfloat16", "max_abs_logit_diff_vs_hf_bf16": bf16["max_abs_logit_diff"],
       "greedy_equal_vs_hf_bf16": bf16["greedy_equal"], "max_abs_logit_diff_vs_fp32": vs_fp32,
       "max_abs_logit": fp32_logits.abs().max().item()}
""",
}


def run_phase(code: str, args: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", PRELUDE + code + EPILOGUE, json.dumps(args)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def parity_table(rows: list[dict[str, Any]]) -> str:
    """The agreement phases as a table: float32 parity, then the bf16 difference."""
    lines = ["| size | dtype | max abs logit diff vs HF (same dtype) | greedy equal | "
             "max abs diff vs fp32 | max abs logit |", "|" + "---|" * 6]
    for r in rows:
        if r["phase"] == "compare logits and greedy tokens":
            lines.append(f"| {r['size']} | float32 | {r['max_abs_logit_diff']:.3g} | "
                         f"{r['greedy_equal']} | {r['max_abs_logit_diff']:.3g} | "
                         f"{r['max_abs_logit']:.3g} |")
        elif r["phase"] == "compare at bfloat16" and "skipped" in r:
            lines.append(f"| {r['size']} | bfloat16 | skipped: {r['skipped']} | | | |")
        elif r["phase"] == "compare at bfloat16":
            lines.append(f"| {r['size']} | bfloat16 | {r['max_abs_logit_diff_vs_hf_bf16']:.3g} | "
                         f"{r['greedy_equal_vs_hf_bf16']} | "
                         f"{r['max_abs_logit_diff_vs_fp32']:.3g} | {r['max_abs_logit']:.3g} |")
    return "\n".join(lines)


def run_phases_in_one_process(args: dict[str, Any]) -> list[dict[str, Any]]:
    """--quick: every phase in turn in one process (imports paid once; the peak RSS is then
    the process's so far, not the phase's own)."""
    code = "".join("t0 = time.perf_counter()\n" + code + EPILOGUE for code in PHASES.values())
    proc = subprocess.run([sys.executable, "-c", PRELUDE + code, json.dumps(args)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return [json.loads(line) for line in proc.stdout.strip().splitlines()[-len(PHASES):]]


def measure_size(size: str, repeats: int, quick: bool = False) -> list[dict[str, Any]]:
    """A row per phase of `size`: the median round's results, with every round's seconds."""
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in PHASES}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            args = {"shape": SIZES[size], "hf": f"{tmp}/hf", "ours": f"{tmp}/ours",
                    "exported": f"{tmp}/exported"}
            together = iter(run_phases_in_one_process(args)) if quick else None
            for name, code in PHASES.items():
                result = next(together) if together is not None else run_phase(code, args)
                rounds[name].append(result)
                extra = {k: v for k, v in result.items() if k not in ("seconds", "peak_rss_mb")}
                print(f"{size:12s} {name:38s} {result['seconds']:7.2f} s  "
                      f"peak RSS {result['peak_rss_mb']:7.0f} MB  {extra or ''}", flush=True)
    rows = []
    for name, done in rounds.items():
        seconds = sorted(r["seconds"] for r in done)
        median = sorted(done, key=lambda r: r["seconds"])[(len(done) - 1) // 2]
        rows.append({"size": size, "phase": name, **median,
                     "seconds_runs": [r["seconds"] for r in done],
                     "seconds_range": [seconds[0], seconds[-1]]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["gpt2"], choices=list(SIZES))
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test on a tiny GPT-2; writes only to an explicit --out")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default benchmarks/results/hf_interop.json)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of every phase, interleaved (median and range)")
    cli = parser.parse_args()
    sizes = ["tiny"] if cli.quick else cli.sizes
    rows: list[dict[str, Any]] = []
    for size in sizes:
        rows += measure_size(size, 1 if cli.quick else cli.repeats, cli.quick)
    for size in sizes:
        by = {r["phase"]: r for r in rows if r["size"] == size}
        peer = by["peer: transformers from_pretrained"]["seconds"]
        ratio = by["gptscratch import-hf"]["seconds"] / peer
        print(f"{size}: import-hf takes {ratio:.2f}x the time of transformers' from_pretrained"
              + (" (--quick: one process for all phases, so not a comparison)" if cli.quick
                 else ""))
    print()
    print(parity_table(rows))
    if cli.quick and cli.out is None:
        print("--quick: not saved (give --out to keep it)")
        return
    out = cli.out or RESULTS / "hf_interop.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(
        {"date": date.today().isoformat(), "command": " ".join(sys.argv),
         "provenance": provenance("float32"), "rows": rows},
        indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
