"""Import / export of Hugging Face GPT-2 at real sizes: time, peak memory, logit agreement.

Offline, so the weights are random: transformers builds a GPT-2 of each requested size with
its own init and saves it. Each phase runs in its own Python process (so its peak RSS is its
own), and transformers' `AutoModelForCausalLM.from_pretrained` of the same folder is the peer
for the timings. The last phase loads both models and compares their logits on a full 1024-token
context and their greedy continuations.

    python benchmarks/hf_interop.py                      # gpt2 (124M), ~1 minute
    python benchmarks/hf_interop.py --sizes gpt2 gpt2-medium

Prints a table and writes benchmarks/results/hf_interop.json. Run it alone on the machine.
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

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SIZES = {"gpt2": dict(n_embd=768, n_layer=12, n_head=12),
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
m = api.load(args["ours"], "cpu")[0]
out = {"params": m.num_params(non_embedding=False)}
""",
    "gptscratch export-hf": """
from gptscratch import api
api.export_hf(args["ours"], args["exported"])
out = {}
""",
    "compare logits and greedy tokens": """
from transformers import AutoModelForCausalLM
from gptscratch import api
ours = api.load(args["ours"], "cpu")[0]
hf = AutoModelForCausalLM.from_pretrained(args["exported"]).eval()
hf.generation_config.eos_token_id = None
ids = torch.randint(0, 50257, (1, 1024), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    diff = (ours(ids) - hf(ids).logits).abs().max().item()
    prompt, seq = ids[:, :8], ids[:, :8]
    for _ in range(20):
        seq = torch.cat([seq, ours(seq)[:, -1:].argmax(-1)], dim=1)
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                         do_sample=False, pad_token_id=0)
out = {"max_abs_logit_diff": diff, "greedy_equal": seq.tolist() == theirs.tolist()}
""",
}


def run_phase(code: str, args: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", PRELUDE + code + EPILOGUE, json.dumps(args)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["gpt2"], choices=list(SIZES))
    cli = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for size in cli.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            args = {"shape": SIZES[size], "hf": f"{tmp}/hf", "ours": f"{tmp}/ours",
                    "exported": f"{tmp}/exported"}
            for name, code in PHASES.items():
                result = run_phase(code, args)
                rows.append({"size": size, "phase": name, **result})
                extra = {k: v for k, v in result.items() if k not in ("seconds", "peak_rss_mb")}
                print(f"{size:12s} {name:38s} {result['seconds']:7.2f} s  "
                      f"peak RSS {result['peak_rss_mb']:7.0f} MB  {extra or ''}", flush=True)
    for size in cli.sizes:
        by = {r["phase"]: r for r in rows if r["size"] == size}
        peer = by["peer: transformers from_pretrained"]["seconds"]
        ratio = by["gptscratch import-hf"]["seconds"] / peer
        print(f"{size}: import-hf takes {ratio:.2f}x the time of transformers' from_pretrained")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hf_interop.json").write_text(json.dumps(
        {"date": date.today().isoformat(), "command": " ".join(sys.argv), "rows": rows},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
