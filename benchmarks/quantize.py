"""Int8 decoding (`--quantize int8`): what it buys in speed and costs in accuracy, and how close
each dtype comes to the machine's memory-bandwidth limit.

- Memory bandwidth: a read pass (the sum of a 512 MiB fp32 buffer) and a copy, median of 5.
  At batch 1 a decoding step reads every weight once, so bandwidth / (weight bytes a step)
  bounds steps/s; each row's share of that bound is reported (`model.quantize.weight_bytes`:
  the Linear weights with their scales and biases, and the norms; the embedding tables are
  read a row a token and left out).
- Kernels (`--kernels-only` re-times them alone, into the file's `kernels` entry): GPT-2
  124M's Linear layers
  one token at a time through each candidate: fp32, ours (FBGEMM's dynamic int8), the
  weight-only int8 and int4 kernels torchao calls (`torch._weight_int8pack_mm`,
  `torch._weight_int4pack_mm_for_cpu`). How int8 was chosen.
- Speed: cached greedy decoding from a 16-token prompt, fp32 weights against int8 weights, at
  GPT-2 124M's shape (random weights: speed does not depend on their values) and the
  `shakespeare-char` preset's, batch 1 and 8, each run in a fresh process by
  `benchmarks/generation.py`'s own child (rows `ours_cached` and `ours_int8`), `--repeats`
  rounds interleaved: median and range. The int8 / fp32 ratio's range pairs the extremes.
- Serving: `benchmarks/serving.py`'s GPT-2 124M row (16 concurrent streams) with and without
  `--quantize int8`, one server of each in turn, `--repeats` times.
- Accuracy: the whole val split's loss and perplexity of a model trained here (the README's
  main job, `gptscratch train --preset shakespeare-char` on the built-in plays, unless --ckpt
  names another run), in fp32 and with int8 weights (`gptscratch eval --quantize int8`), and
  how often the two pick the same greedy token.

    python benchmarks/quantize.py                    # ~25 minutes on 2 cores (5 of training)
    python benchmarks/quantize.py --ckpt out/shakespeare-char --repeats 3
    python benchmarks/quantize.py --quick --out /tmp/q.json   # a tiny model: that it works

Prints a table and writes benchmarks/results/quantize.json (or --out) with its provenance.
Run it alone: another busy process on this 2-core machine slows decoding several-fold.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from generation import run, shapes  # the sibling benchmark: one decoding timer
from provenance import provenance

from gptscratch import api
from gptscratch.model.gpt import GPT
from gptscratch.model.quantize import quantize_linears, weight_bytes

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "quantize.json"
METHODS = ("ours_cached", "ours_int8")


def bandwidth(mib: int = 512, repeats: int = 5) -> dict[str, float]:
    """GB/s of reading (a sum) and of copying (bytes read + bytes written) a large buffer."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    found: dict[str, list[float]] = {"read_gb_s": [], "copy_gb_s": []}
    src.sum(), dst.copy_(src)  # fault the pages in
    for _ in range(repeats):
        start = time.perf_counter()
        src.sum()
        found["read_gb_s"].append(src.numel() * 4 / (time.perf_counter() - start) / 1e9)
        start = time.perf_counter()
        dst.copy_(src)
        found["copy_gb_s"].append(2 * src.numel() * 4 / (time.perf_counter() - start) / 1e9)
    return {k: round(statistics.median(v), 2) for k, v in found.items()} | {
        f"{k}_range": [round(min(v), 2), round(max(v), 2)] for k, v in found.items()}


def kernels(repeats: int) -> dict[str, Any]:
    """The candidate int8 / int4 kernels on GPT-2 124M's Linear layers (12 blocks' four
    projections and the 50,257-wide head, random weights), one token at a time: ms for the
    whole stack, median of `repeats` rounds of 20 passes, each kernel in turn."""
    import warnings

    import torch.nn.functional as F

    from gptscratch.model.quantize import Int8Linear, quantize_rows

    torch.manual_seed(0)
    sides = [(768, 2304), (768, 768), (768, 3072), (3072, 768)] * 12 + [(768, 50257)]
    linears = [torch.nn.Linear(i, o, bias=False) for i, o in sides]
    x = {i: torch.randn(1, i) for i, _ in sides}
    ours = [Int8Linear(linear) for linear in linears]
    rows = [quantize_rows(linear.weight) for linear in linears]
    paths: dict[str, Any] = {
        "fp32 F.linear": lambda: [F.linear(x[m.in_features], m.weight) for m in linears],
        "int8 dynamic, FBGEMM (ours)": lambda: [m(x[m.in_features]) for m in ours],
        "int8 weight-only, torch._weight_int8pack_mm": lambda: [
            torch._weight_int8pack_mm(x[q.size(1)], q, s) for q, s in rows]}
    with warnings.catch_warnings():  # int4 packs 16 output rows at a time: the blocks only
        warnings.simplefilter("ignore")
        int4 = [(i, *_int4(linear.weight)) for (i, o), linear in zip(sides, linears, strict=True)
                if o % 16 == 0]
    paths["int4 weight-only, torch._weight_int4pack_mm_for_cpu (blocks only)"] = lambda: [
        torch._weight_int4pack_mm_for_cpu(x[i], w, 32, sz) for i, w, sz in int4]
    paths["fp32 F.linear (blocks only)"] = lambda: [
        F.linear(x[m.in_features], m.weight) for m in linears[:-1]]
    times: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in paths.items():
            start = time.perf_counter()
            for _ in range(20):
                fn()
            times[name].append((time.perf_counter() - start) / 20 * 1e3)
    return {name: {"ms": round(statistics.median(t), 2), "ms_range": [round(min(t), 2),
                                                                      round(max(t), 2)]}
            for name, t in times.items()}


def _int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit groups of 32 along the input, in the layout the CPU int4 kernel
    takes: the packed weight and the (groups, out, 2) scales and zero points."""
    out, inp = weight.shape
    w = weight.detach().reshape(out, inp // 32, 32)
    low, high = w.amin(-1), w.amax(-1)
    scale = (high - low).clamp(min=1e-6) / 15
    q = torch.round((w - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    packed = torch._convert_weight_to_int4pack_for_cpu(q.reshape(out, inp), 1)
    return packed, torch.stack([scale, low + 8 * scale], -1).transpose(0, 1).contiguous()


def step_bytes(shape: str) -> dict[str, int]:
    """Weight bytes one decoding step reads, fp32 and int8, for a benchmark shape."""
    model = GPT(shapes()[shape]).eval()
    fp32 = weight_bytes(model)
    return {"ours_cached": fp32, "ours_int8": weight_bytes(quantize_linears(model))}


def speed(shapes_: list[str], batches: list[int], tokens: int, repeats: int,
          read_gb_s: float) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for shape in shapes_:
        nbytes = step_bytes(shape)
        for batch in batches:
            got = run(shape, "float32", batch, tokens, tokens, repeats, methods=METHODS)
            for method, r in got.items():
                steps_s = r["tok_s"] / batch
                r["weight_bytes_per_step"] = nbytes[method]
                r["bandwidth_bound_steps_s"] = round(read_gb_s * 1e9 / nbytes[method], 1)
                r["share_of_bandwidth_bound"] = round(steps_s * nbytes[method]
                                                      / (read_gb_s * 1e9), 3)
            fp32, int8 = got["ours_cached"], got["ours_int8"]
            rows[f"{shape}/{batch}"] = {
                "fp32": fp32, "int8": int8,
                "int8_over_fp32": round(int8["tok_s"] / fp32["tok_s"], 2),
                "int8_over_fp32_range": [round(int8["tok_s_range"][0] / fp32["tok_s_range"][1], 2),
                                         round(int8["tok_s_range"][1] / fp32["tok_s_range"][0], 2)]}
    return rows


@torch.inference_mode()
def greedy_agreement(ckpt: str, tokens: int = 8192) -> float:
    """Share of the val split's positions (its first `tokens`, in context-length windows)
    where the fp32 and the int8 model pick the same next token."""
    from gptscratch.data.token_files import load_prepared

    full, int8 = api.load(ckpt, "cpu", "float32"), api.load(ckpt, "cpu", quantize="int8")
    assert full.checkpoint is not None
    T = full.model.config.block_size
    val = load_prepared(full.checkpoint.meta["data_dir"]).val_tokens()
    ids = torch.as_tensor(val[:tokens].astype("int64"))
    windows = ids[: len(ids) // T * T].view(-1, T)
    same = [full.model(w).argmax(-1) == int8.model(w).argmax(-1) for w in windows.split(8)]
    return round(float(torch.cat(same).float().mean()), 4)


def accuracy(ckpt: str | None, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, trained = ckpt, None
        if run_dir is None:
            run_dir = str(Path(tmp) / "shakespeare-char")
            overrides = (dict(max_iters=20, max_time=0.0, n_layer=1, n_embd=32, n_head=2,
                              eval_iters=1, warmup_iters=1, dtype="float32") if quick else {})
            result = api.train("shakespeare-char", "shakespeare", run_dir, overrides=overrides)
            trained = {"steps": result.step, "train_seconds": round(result.elapsed, 1)}
        out: dict[str, Any] = {"ckpt": ckpt or "shakespeare-char trained here on the built-in "
                               "corpus (the README's main job)", "training": trained}
        for name, quantize in (("fp32", "none"), ("int8", "int8")):
            start = time.perf_counter()
            r = api.evaluate(run_dir, quantize=quantize)
            out[name] = {"loss": round(r.loss, 4), "perplexity": round(r.perplexity, 4),
                         "tokens": r.tokens, "seconds": round(time.perf_counter() - start, 1)}
        out["perplexity_change"] = round(out["int8"]["perplexity"] / out["fp32"]["perplexity"]
                                         - 1, 4)
        out["greedy_agreement"] = greedy_agreement(run_dir, 1024 if quick else 65536)
    return out


def serving(repeats: int) -> dict[str, Any]:
    """`benchmarks/serving.py`'s 124M row (16 streams, 32 tokens a request, --max-batch 16),
    served with fp32 and with int8 weights, one round of each in turn; its sequential
    baseline in each run too."""
    runs: dict[str, list[dict[str, float]]] = {"none": [], "int8": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats):
            for quantize in ("none", "int8") if k % 2 == 0 else ("int8", "none"):
                out = Path(tmp) / f"{quantize}-{k}.json"
                subprocess.run([sys.executable, str(REPO / "benchmarks" / "serving.py"),
                                "--no-char", "--streams", "16", "--no-disconnect", "--repeats",
                                "1", "--quantize", quantize, "--out", str(out)], check=True,
                               cwd=REPO)
                model = json.loads(out.read_text())["models"]["124M"]
                row = model["servers"][0]["rows"][0]
                runs[quantize].append({"tok_s": row["tok_s"], "failed": row["failed"],
                                       "baseline_tok_s": model["baseline"]["tok_s"]})
    result: dict[str, Any] = {"model": "GPT-2 124M's shape, random weights", "streams": 16,
                              "max_tokens": 32, "max_batch": 16}
    for quantize, done in runs.items():
        speeds = [r["tok_s"] for r in done]
        result["fp32" if quantize == "none" else "int8"] = {
            "tok_s": statistics.median(speeds), "tok_s_runs": speeds,
            "tok_s_range": [min(speeds), max(speeds)],
            "baseline_tok_s": statistics.median(r["baseline_tok_s"] for r in done),
            "failed": sum(r["failed"] for r in done)}
    result["int8_over_fp32"] = round(result["int8"]["tok_s"] / result["fp32"]["tok_s"], 2)
    return result


def print_kernels(found: dict[str, Any]) -> None:
    for name, k in found.items():
        print(f"{name:<70} {k['ms']:>8} ms a token ({k['ms_range'][0]}-{k['ms_range'][1]})")


def print_table(result: dict[str, Any]) -> None:
    bw = result["bandwidth"]
    print(f"\nmemory bandwidth: read {bw['read_gb_s']} GB/s, copy {bw['copy_gb_s']} GB/s")
    print(f"{'shape/batch':<12} {'weights':<6} {'tok/s':>8} {'range':>15} {'MB/step':>8} "
          f"{'bound steps/s':>13} {'share':>6}")
    for key, row in result["speed"].items():
        for name in ("fp32", "int8"):
            r = row[name]
            low, high = r["tok_s_range"]
            print(f"{key:<12} {name:<6} {r['tok_s']:>8} {f'{low}-{high}':>15} "
                  f"{r['weight_bytes_per_step'] / 1e6:>8.1f} {r['bandwidth_bound_steps_s']:>13} "
                  f"{r['share_of_bandwidth_bound']:>6.1%}")
        print(f"{key:<12} int8 / fp32: {row['int8_over_fp32']}x "
              f"(range {row['int8_over_fp32_range']})")
    a = result["accuracy"]
    if "serving" in result:
        sv = result["serving"]
        print(f"\nserving 124M, 16 streams: fp32 {sv['fp32']['tok_s']} tok/s "
              f"({sv['fp32']['tok_s_range']}), int8 {sv['int8']['tok_s']} "
              f"({sv['int8']['tok_s_range']}): {sv['int8_over_fp32']}x")
    print(f"\nval loss fp32 {a['fp32']['loss']} (perplexity {a['fp32']['perplexity']}), int8 "
          f"{a['int8']['loss']} ({a['int8']['perplexity']}): perplexity "
          f"{a['perplexity_change']:+.2%}; same greedy token at {a['greedy_agreement']:.2%} "
          "of positions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", nargs="+", default=["124m", "preset"], choices=list(shapes()))
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ckpt", default=None, help="measure this run's accuracy instead of "
                        "training the main job")
    parser.add_argument("--quick", action="store_true",
                        help="the preset's shape, 16 tokens, one round, a tiny model")
    parser.add_argument("--no-serving", action="store_true",
                        help="leave out the server's 16-stream rows (they need ../shared/data)")
    parser.add_argument("--kernels-only", action="store_true",
                        help="time the candidate kernels only, into the results file's "
                             "`kernels` entry (the rest of the file is kept)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.shape, args.batch, args.tokens, args.repeats = ["preset"], [1], 16, 1
    torch.set_flush_denormal(True)
    out = args.out or RESULTS
    if args.kernels_only:
        result = json.loads(out.read_text()) if out.exists() else {}
        result["kernels"] = kernels(args.repeats)
        result["kernels_provenance"] = provenance("float32 activations")
        print_kernels(result["kernels"])
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")
        return
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "quantize", "provenance": provenance("float32 "
                              "activations; fp32 or int8 Linear weights"),
                              "tokens": args.tokens, "repeats": args.repeats,
                              "bandwidth": bandwidth(64 if args.quick else 512)}
    result["kernels"] = kernels(args.repeats)
    result["kernels_provenance"] = result["provenance"]
    print_kernels(result["kernels"])
    result["speed"] = speed(args.shape, args.batch, args.tokens, args.repeats,
                            result["bandwidth"]["read_gb_s"])
    result["accuracy"] = accuracy(args.ckpt, args.quick)
    if not (args.quick or args.no_serving):
        result["serving"] = serving(args.repeats)
    result["minutes"] = round((time.perf_counter() - started) / 60, 1)
    print_table(result)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
