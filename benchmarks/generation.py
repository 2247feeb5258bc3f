"""Generation benchmark: tokens/s of our cached and uncached decoding against Hugging Face.

For each model shape (the shakespeare-char preset's with GPT-2's architecture, and GPT-2 124M,
random weights), dtype and batch size it generates greedily from a 16-token prompt, with
- ours, KV cache (`gptscratch.model.decoding.Decoder`, one greedy step per token: the
  token-level work the decoding engine does for each row),
- ours, no cache (the whole context re-run every step, as nanoGPT and minGPT do),
- Hugging Face `GPT2LMHeadModel.generate(use_cache=True)`,
(and, for `benchmarks/quantize.py` only, `ours_int8`: the cached decoding with the Linear
weights in int8, as `--quantize int8` loads them),
timing every token, so one run gives tokens/s after 256 new tokens and at its end, and the time
per token near the start (tokens 2-65) and near the end (the last 64).

What is compared, and how:
- The same model on both sides: the shape's layers, heads, width and context, GPT-2's biases
  (HF's GPT-2 always has them, so ours gets them too, even where the preset has none), the
  same fused tanh GELU (HF's `gelu_pytorch_tanh`; ours `gelu_tanh`), tied embeddings, SDPA
  attention, the same dtype, the same prompt tokens.
- The same context: HF's `n_positions` is our `block_size`. HF's GPT-2 cannot go past its
  position table, while ours slides its window there (`decoding.window_keep`: keep the newest
  half, re-prefill). So every compared run stops when the text fills the context: prompt + new
  tokens = block_size, i.e. at most 112 new tokens on the preset (context 128) and 1,008 on
  124M (context 1,024), whatever `--tokens` asks. Neither side slides in the comparison.
- Where `--tokens` alone is longer than the context (the preset's 1,024), an extra
  `ours_cached_slide` row generates all of them through the sliding window: ours only, with no
  HF counterpart, to show what sliding costs.
- Uncached decoding is measured, never extrapolated: it generates at most `--uncached-tokens`
  new tokens (default 256; its `new_tokens` field and the table say how many), and its ratio to
  cached decoding compares the two over that same number of tokens (the cached run's own
  tokens/s at that point).
- Each method runs in its own process (`--child`), so its peak memory is its own: `peak_mib`
  is the resident-set growth during the timed generation (cache, activations, logits) over the
  process's state just before it; `process_peak_mib` is the process's peak over its state
  after imports (the weights and a warm-up included).
- Every method runs `--repeats` times (3), interleaved: each round runs every method once, so
  the VM's slow phases fall on all alike; a method's figures are its median run's, with every
  run's tokens/s and their range. A lead within the ranges is a tie.

    python benchmarks/generation.py                           # everything, ~75 minutes
    python benchmarks/generation.py --shape 124m --dtype bfloat16 --batch 1
    python benchmarks/generation.py --quick --shape preset --out /tmp/g.json  # smoke test

Results merge into benchmarks/results/generation.json (or --out; keyed by shape, dtype, batch,
method, each key with its provenance), so the runs can be split. Run it alone: another busy
process on this 2-core machine slows decoding several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from provenance import provenance
from quality import machine  # the sibling benchmark script: one machine description

from gptscratch.model.config import ModelConfig, SamplingConfig
from gptscratch.model.decoding import Decoder
from gptscratch.model.gpt import GPT
from gptscratch.model.quantize import quantize_linears
from gptscratch.model.sampling import sample_next_token
from gptscratch.training.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "generation.json"
PROMPT = 16
GREEDY = SamplingConfig(temperature=0.0)
METHODS = ("ours_cached", "ours_uncached", "hf", "ours_cached_slide", "ours_int8")
COMPARED = ("ours_cached", "ours_uncached", "hf", "ours_cached_slide")  # this script's rows


def shapes() -> dict[str, ModelConfig]:
    """The benchmark's shapes, with GPT-2's architecture and biases (HF's GPT-2 has them, always;
    `shakespeare-char` itself runs the modern recipe, hence its `-gpt2` twin's fields)."""
    preset = get_preset("shakespeare-char-gpt2").model
    return {
        "preset": ModelConfig(vocab_size=65, **{**preset, "dropout": 0.0, "bias": True}),
        "124m": ModelConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                            bias=True, dropout=0.0),
    }


def rss() -> int:
    """This process's resident set size, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples this process's resident set size every 5 ms while a run is going."""

    def __init__(self) -> None:
        self.peak = self.base = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def time_ours(model: GPT, prompt: torch.Tensor, n: int, use_cache: bool) -> list[float]:
    """Seconds from the start to each new token."""
    t0 = time.perf_counter()
    stamps = []
    decoder = Decoder(model, prompt.tolist(), use_cache=use_cache)
    for _ in range(n):
        greedy_step(decoder)
        stamps.append(time.perf_counter() - t0)
    return stamps


@torch.inference_mode()
def greedy_step(decoder: Decoder) -> torch.Tensor:
    """One token-level decoding step, as the engine runs it for greedy rows: the scores,
    their log-probabilities, the pick, the append. (B,) ids on the host."""
    logits = decoder.logits()  # (B, V)
    ids = sample_next_token(logits, GREEDY)  # (B, 1)
    F.log_softmax(logits, dim=-1).gather(1, ids)
    decoder.append(ids)
    return ids[:, 0].cpu()


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


def hf_model(config: ModelConfig, dtype: torch.dtype) -> Any:
    """HF's GPT-2 of our shape: our context as its position table, the same GELU kernel."""
    from transformers import GPT2Config, GPT2LMHeadModel

    fields: dict[str, Any] = dict(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, layer_norm_epsilon=1e-5,
        activation_function="gelu" if config.activation == "gelu" else "gelu_pytorch_tanh",
        attn_implementation="sdpa")
    model: Any = GPT2LMHeadModel(GPT2Config(**fields))
    return model.to(dtype).eval()


def summarise(stamps: list[float], batch: int, n: int, marks: Iterable[int] = ()
              ) -> dict[str, Any]:
    """tok/s at the end and after each of 256 and `marks` new tokens; ms/token early and late."""
    steps = [b - a for a, b in zip([0.0] + stamps[:-1], stamps, strict=True)]
    k = min(64, max(1, (n - 2) // 2))
    at = {f"tok_s_{m}": round(batch * m / stamps[m - 1], 2)
          for m in sorted({256, *marks}) if 0 < m <= n}
    return {"new_tokens": n, **at, "tok_s": round(batch * n / stamps[-1], 2),
            "ms_per_token_start": round(1e3 * sum(steps[1:1 + k]) / k, 2),
            "ms_per_token_end": round(1e3 * sum(steps[-k:]) / k, 2),
            "seconds": round(stamps[-1], 2)}


def lengths(config: ModelConfig, tokens: int, uncached_tokens: int) -> dict[str, int]:
    """New tokens per method: the compared runs stop when the text fills the context (HF's
    GPT-2 cannot slide); the uncached run at most `uncached_tokens`; the sliding row, ours
    only, takes all `tokens` when they alone are longer than the context."""
    fits = min(tokens, config.block_size - PROMPT)
    out = {"ours_cached": fits, "ours_uncached": min(fits, uncached_tokens), "hf": fits,
           "ours_int8": fits}  # the int8 row is quantize.py's
    if tokens > config.block_size:
        out["ours_cached_slide"] = tokens
    return out


def measure(method: str, shape: str, dtype: torch.dtype, batch: int, n: int,
            marks: list[int]) -> dict[str, Any]:
    """Run one method in this process (the child): its timings and its memory."""
    torch.set_flush_denormal(True)
    if method == "hf":  # loaded before the baseline: transformers' own memory is not HF's run
        from transformers import GPT2LMHeadModel  # noqa: F401
    config = shapes()[shape]
    torch.manual_seed(0)
    prompt = torch.randint(0, config.vocab_size, (batch, PROMPT),
                           generator=torch.Generator().manual_seed(1))  # the same for all
    fn: Callable[[int], list[float]]
    with PeakRSS() as whole:
        if method == "hf":
            hf = hf_model(config, dtype)
            fn = lambda k: time_hf(hf, prompt, k)  # noqa: E731
        else:
            model = GPT(config).to(dtype).eval()
            if method == "ours_int8":  # Linear weights in int8, as `--quantize int8` loads
                quantize_linears(model)
            cached = method != "ours_uncached"
            fn = lambda k: time_ours(model, prompt, k, cached)  # noqa: E731
        fn(min(n, 8))  # warm the kernels (and the allocator) first
        with PeakRSS() as mem:
            stamps = fn(n)
    return {**summarise(stamps, batch, n, marks),
            "peak_mib": round((mem.peak - mem.base) / 2**20, 1),
            "process_peak_mib": round((max(whole.peak, mem.peak) - whole.base) / 2**20, 1)}


def run(shape: str, dtype: str, batch: int, tokens: int, uncached_tokens: int,
        repeats: int = 3, methods: Iterable[str] = COMPARED) -> dict[str, dict[str, Any]]:
    """Each of `methods` for one shape / dtype / batch, each run in a fresh process, `repeats`
    rounds interleaved (each round runs every method once). A method's entry is its median run
    by tokens/s, with every run's tokens/s (`tok_s_runs`) and their range (`tok_s_range`)."""
    plan = {method: n for method, n in lengths(shapes()[shape], tokens, uncached_tokens).items()
            if method in methods}
    runs: dict[str, list[dict[str, Any]]] = {method: [] for method in plan}
    for _ in range(repeats):
        for method, n in plan.items():
            marks = ([plan["ours_uncached"]] if method == "ours_cached" and "ours_uncached" in plan
                     else [])
            proc = subprocess.run(
                [sys.executable, __file__, "--child", method, "--shape", shape, "--dtype",
                 dtype, "--batch", str(batch), "--tokens", str(n),
                 "--marks", *map(str, marks)],
                capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(f"  {shape} {dtype} batch {batch}: {method} failed\n"
                      f"{proc.stderr[-2000:]}", flush=True)
                continue
            runs[method].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            last = runs[method][-1]
            print(f"  {shape} {dtype} batch {batch}: {method:17s} {last['tok_s']:8.1f} "
                  f"tok/s over {n} new tokens, peak {last['peak_mib']} MiB", flush=True)
    out: dict[str, dict[str, Any]] = {}
    for method, done in runs.items():
        if done:
            speeds = sorted(r["tok_s"] for r in done)
            median = sorted(done, key=lambda r: r["tok_s"])[(len(done) - 1) // 2]
            out[method] = {**median, "tok_s_runs": [r["tok_s"] for r in done],
                           "tok_s_range": [speeds[0], speeds[-1]]}
    return out


def table(results: dict[str, Any]) -> str:
    rows = ["| shape | dtype | batch | method | new tokens | tok/s @256 | tok/s (all) | "
            "ms/token start | ms/token end | end/start | peak MiB | process peak MiB |",
            "|" + "---|" * 12]
    for key, r in results["runs"].items():
        shape, dtype, batch = key.split("/")
        for method, m in r.items():
            est = " (est.)" if m.get("estimated") else ""  # rows from before 2026-11-30
            note = " (ours only: slides)" if method == "ours_cached_slide" else ""
            ratio = m["ms_per_token_end"] / m["ms_per_token_start"]
            rows.append(f"| {shape} | {dtype} | {batch} | {method}{note} | "
                        f"{m.get('new_tokens', results.get('new_tokens', ''))} | "
                        f"{m.get('tok_s_256', '')} | {m['tok_s']}{est} | "
                        f"{m['ms_per_token_start']} | {m['ms_per_token_end']} | {ratio:.2f} | "
                        f"{m.get('peak_mib', '')} | {m.get('process_peak_mib', '')} |")
    return "\n".join(rows)


def ratios(results: dict[str, Any]) -> list[str]:
    """Cached / HF over the same tokens; cached / uncached over the uncached run's tokens."""
    lines = []
    for key, r in results["runs"].items():
        if not {"ours_cached", "hf", "ours_uncached"} <= set(r):
            continue
        c, h, u = r["ours_cached"], r["hf"], r["ours_uncached"]
        n_u = u.get("new_tokens")
        cached_at_u = c.get(f"tok_s_{n_u}", c["tok_s"] if n_u == c.get("new_tokens") else None)
        vs_uncached = (f"cached/uncached {cached_at_u / u['tok_s']:.1f}x over {n_u} tokens"
                       if cached_at_u else "cached/uncached: lengths differ (old row)")
        lines.append(f"{key}: cached/HF {c['tok_s'] / h['tok_s']:.2f}x over "
                     f"{c.get('new_tokens', '?')} tokens, {vs_uncached}, "
                     f"end/start {c['ms_per_token_end'] / c['ms_per_token_start']:.2f}")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", nargs="+", default=["preset", "124m"], choices=list(shapes()))
    parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--tokens", type=int, default=1024,
                        help="new tokens asked for; the compared runs stop at the context")
    parser.add_argument("--uncached-tokens", type=int, default=256,
                        help="new tokens of the uncached runs (at most the compared runs')")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of every method, interleaved (median and range)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: 128 tokens, 32 uncached, one round, saved only "
                             "to --out")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results file (default {RESULTS.relative_to(REPO)})")
    parser.add_argument("--child", choices=METHODS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--marks", nargs="*", type=int, default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.uncached_tokens = 128, min(args.uncached_tokens, 32)
    if min(args.tokens, args.uncached_tokens, *args.batch) < 1:
        parser.error("--tokens, --uncached-tokens and --batch must be >= 1")
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.shape[0], getattr(torch, args.dtype[0]),
                                 args.batch[0], args.tokens, args.marks)))
        return
    out = args.out or RESULTS
    results: dict[str, Any] = {"runs": {}}
    if out.exists() and not args.quick:
        results = json.loads(out.read_text())
    for shape in args.shape:
        for dtype in args.dtype:
            for batch in args.batch:
                key = f"{shape}/{dtype}/{batch}"
                results["runs"][key] = run(shape, dtype, batch, args.tokens,
                                           args.uncached_tokens,
                                           1 if args.quick else args.repeats)
                results.setdefault("provenance", {})[key] = provenance(dtype)
    results.update(machine=machine(), date=str(date.today()), new_tokens=args.tokens,
                   uncached_tokens=args.uncached_tokens, prompt_tokens=PROMPT,
                   threads=torch.get_num_threads(),
                   comparison="same shape, GPT-2 biases, gelu_pytorch_tanh, SDPA, dtype and "
                              "prompt; HF n_positions = block_size; compared runs stop when "
                              "the text fills the context; each method in its own process")
    print(table(results))
    print("\n".join(ratios(results)))
    if args.quick and args.out is None:
        print("--quick: not saved (give --out to keep it)")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
