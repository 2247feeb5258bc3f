"""Generation benchmark: tokens/s of our cached and uncached decoding against Hugging Face.

For each model shape (the shakespeare-char preset's, and GPT-2 124M, random weights), dtype and
batch size it generates 1,024 new tokens greedily from a 16-token prompt, with
- ours, KV cache (`gptscratch.model.decoding.Decoder`, one `step` per token),
- ours, no cache (the whole context re-run every step, as nanoGPT and minGPT do),
- Hugging Face `GPT2LMHeadModel.generate(use_cache=True)`, same shape and dtype,
timing every token, so one run gives tokens/s after 256 and after 1,024 new tokens, and the
time per token near the start (tokens 2-65) and near the end (the last 64). Peak memory is the
largest resident set size reached during the run, above what the process held before it.

    python benchmarks/generation.py                           # everything, ~25 minutes
    python benchmarks/generation.py --shape 124m --dtype bfloat16 --batch 1
    python benchmarks/generation.py --quick                   # 128 tokens, a smoke test

Results merge into benchmarks/results/generation.json (keyed by shape, dtype, batch, method),
so the runs can be split. The uncached 124M runs would take tens of minutes: past a time budget
they are timed on the first and the last 32 steps of the 1,024 and the total is estimated from
those (the cost of an uncached step grows linearly with the context), marked "est.".
Run it alone: another busy process on this 2-core machine slows decoding several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch
from quality import machine  # the sibling benchmark script: one machine description

from gptscratch.model.config import ModelConfig
from gptscratch.model.decoding import Decoder
from gptscratch.model.gpt import GPT
from gptscratch.model.sampling import SamplingConfig
from gptscratch.training.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "generation.json"
PROMPT = 16
GREEDY = SamplingConfig(temperature=0.0)


def shapes() -> dict[str, ModelConfig]:
    preset = get_preset("shakespeare-char").model
    return {
        "preset": ModelConfig(vocab_size=65, **{**preset, "dropout": 0.0}),
        "124m": ModelConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                            bias=True, dropout=0.0),
    }


class PeakRSS:
    """Samples this process's resident set size every 5 ms while a run is going."""

    def __init__(self) -> None:
        self.peak = self.base = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def time_ours(model: GPT, prompt: torch.Tensor, n: int, use_cache: bool) -> list[float]:
    """Seconds from the start to each new token."""
    t0 = time.perf_counter()
    stamps = []
    decoder = Decoder(model, prompt.tolist(), use_cache=use_cache)
    for _ in range(n):
        decoder.step(GREEDY)
        stamps.append(time.perf_counter() - t0)
    return stamps


def time_hf(model: Any, prompt: torch.Tensor, n: int) -> list[float]:
    """Seconds from the start to each new token of transformers' generate (a streamer is
    called once with the prompt, then once per new token)."""
    stamps: list[float] = []

    class Clock:
        calls = 0

        def put(self, value: torch.Tensor) -> None:
            Clock.calls += 1
            if Clock.calls > 1:
                stamps.append(time.perf_counter() - t0)

        def end(self) -> None:
            pass

    t0 = time.perf_counter()
    with torch.inference_mode():
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                       min_new_tokens=n, do_sample=False, use_cache=True, pad_token_id=0,
                       streamer=Clock())
    return stamps


def hf_model(config: ModelConfig, positions: int, dtype: torch.dtype) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(vocab_size=config.vocab_size, n_positions=positions,
                           n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(hf_config).to(dtype).eval()


def summarise(stamps: list[float], batch: int, n: int) -> dict[str, Any]:
    steps = [b - a for a, b in zip([0.0] + stamps[:-1], stamps, strict=True)]
    k = min(64, max(1, (n - 2) // 2))
    at = {f"tok_s_{m}": round(batch * m / stamps[m - 1], 2) for m in (256, 1024) if m <= n}
    return {**at, "tok_s": round(batch * n / stamps[-1], 2),
            "ms_per_token_start": round(1e3 * sum(steps[1:1 + k]) / k, 2),
            "ms_per_token_end": round(1e3 * sum(steps[-k:]) / k, 2),
            "seconds": round(stamps[-1], 2)}


def estimate_uncached(model: GPT, prompt: torch.Tensor, n: int, batch: int) -> dict[str, Any]:
    """Time 32 uncached steps at the start and 32 at the end of an n-token generation and
    integrate: an uncached step's cost is linear in its context length."""
    first = time_ours(model, prompt, 32, use_cache=False)
    late_prompt = torch.randint(0, model.config.vocab_size, (batch, PROMPT + n - 32))
    last = time_ours(model, late_prompt, 32, use_cache=False)
    start_ms, end_ms = 1e3 * first[-1] / 32, 1e3 * last[-1] / 32
    total = n * (start_ms + end_ms) / 2 / 1e3
    return {"tok_s": round(batch * n / total, 2), "ms_per_token_start": round(start_ms, 2),
            "ms_per_token_end": round(end_ms, 2), "seconds": round(total, 1), "estimated": True}


def run(shape: str, config: ModelConfig, dtype: torch.dtype, batch: int, n: int,
        uncached_budget: float) -> dict[str, dict[str, Any]]:
    torch.manual_seed(0)
    model = GPT(config).to(dtype).eval()
    prompt = torch.randint(0, config.vocab_size, (batch, PROMPT))
    out: dict[str, dict[str, Any]] = {}

    def measure(name: str, fn: Callable[[int], list[float]]) -> None:
        fn(min(n, 8))  # warm the kernels (and the allocator) first
        with PeakRSS() as mem:
            stamps = fn(n)
        out[name] = {**summarise(stamps, batch, n),
                     "peak_mib": round((mem.peak - mem.base) / 2**20, 1)}
        print(f"  {shape} {str(dtype)[6:]} batch {batch}: {name:14s} {out[name]['tok_s']:8.1f} "
              f"tok/s", flush=True)

    measure("ours_cached", lambda k: time_ours(model, prompt, k, True))
    # An uncached step over the whole window costs ~ (window / 1 token) cached steps' compute.
    cached_step = out["ours_cached"]["seconds"] / n
    guess = n * cached_step * min(config.block_size, PROMPT + n) / 8
    if guess <= uncached_budget:
        measure("ours_uncached", lambda k: time_ours(model, prompt, k, False))
    else:
        out["ours_uncached"] = estimate_uncached(model, prompt, n, batch)
        print(f"  {shape} {str(dtype)[6:]} batch {batch}: ours_uncached  "
              f"{out['ours_uncached']['tok_s']:8.1f} tok/s (est.)", flush=True)
    # HF GPT-2 cannot go past its position table, so it gets one that holds the whole text;
    # ours slides its window instead (the preset's context is far shorter than 1,024).
    hf = hf_model(config, max(config.block_size, PROMPT + n), dtype)
    measure("hf", lambda k: time_hf(hf, prompt, k))
    return out


def table(results: dict[str, Any]) -> str:
    rows = ["| shape | dtype | batch | method | tok/s @256 | tok/s @1024 | ms/token start | "
            "ms/token end | end/start | peak MiB |", "|" + "---|" * 10]
    for key, r in results["runs"].items():
        shape, dtype, batch = key.split("/")
        for method, m in r.items():
            est = " (est.)" if m.get("estimated") else ""
            ratio = m["ms_per_token_end"] / m["ms_per_token_start"]
            rows.append(f"| {shape} | {dtype} | {batch} | {method} | {m.get('tok_s_256', '')} | "
                        f"{m.get('tok_s_1024', m['tok_s'])}{est} | {m['ms_per_token_start']} | "
                        f"{m['ms_per_token_end']} | {ratio:.2f} | {m.get('peak_mib', '')} |")
    return "\n".join(rows)


def ratios(results: dict[str, Any]) -> list[str]:
    lines = []
    for key, r in results["runs"].items():
        if {"ours_cached", "hf", "ours_uncached"} <= set(r):
            c = r["ours_cached"]
            lines.append(f"{key}: cached/HF {c['tok_s'] / r['hf']['tok_s']:.2f}x, "
                         f"cached/uncached {c['tok_s'] / r['ours_uncached']['tok_s']:.1f}x, "
                         f"end/start {c['ms_per_token_end'] / c['ms_per_token_start']:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", nargs="+", default=["preset", "124m"])
    parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--uncached-budget", type=float, default=150.0,
                        help="seconds an uncached run may take before it is estimated instead")
    parser.add_argument("--quick", action="store_true", help="128 tokens, results not saved")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    n = 128 if args.quick else args.tokens
    results: dict[str, Any] = {"runs": {}}
    if RESULTS.exists() and not args.quick:
        results = json.loads(RESULTS.read_text())
    for shape in args.shape:
        for dtype in args.dtype:
            for batch in args.batch:
                key = f"{shape}/{dtype}/{batch}"
                results["runs"][key] = run(shape, shapes()[shape], getattr(torch, dtype), batch,
                                           n, args.uncached_budget)
    results.update(machine=machine(), date=str(date.today()), new_tokens=n,
                   prompt_tokens=PROMPT, threads=torch.get_num_threads())
    print(table(results))
    print("\n".join(ratios(results)))
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
