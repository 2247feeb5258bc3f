"""Serving benchmark: the HTTP server under concurrent streams, against unbatched `generate`.

The server runs as a user runs it, `python -m gptscratch serve --ckpt ... --max-batch N
--dtype float32` in its own process on a loopback port, and threads of this process stream
`POST /v1/completions` (plain HTTP, server-sent events) at 1, 4, 16 and 64 concurrent streams.
Each request gets a line of tinyshakespeare (`../shared/data/tinyshakespeare.txt`) as its
prompt, its own seed, temperature 0.8, and a fixed max_tokens (there is no end-of-text stop,
so every request generates exactly that many). Per request it records the time to the first
text, the total latency and the tokens (`usage`); per row, the aggregate tokens/s (every
request's tokens over the row's wall time); a request fails on a status other than 200, an
error chunk, a missing `[DONE]`, a short answer or an exception. The server's memory is its
process's VmRSS / VmHWM (`/proc/<pid>/status`).

The baseline, in the same run and interleaved with the rows, serves the 16-stream row's
requests one after another through `api.stream_chunks` in this process (same model, dtype,
prompts, seeds, sampling and max_tokens; no HTTP, no batching).

Models (no weights can be downloaded here):
  shakespeare-char  the preset's shape, trained briefly here (50 steps) unless --ckpt is given;
                    96 tokens per request (prompt + answer fit its 128-token window); served
                    with --max-batch 16 and with --max-batch 64; 2 requests per stream
  124M              GPT-2's shape with random weights and the GPT-2 tokenizer (speed does not
                    depend on the values); 32 tokens per request; --max-batch 16; 1 request
                    per stream
Every row is repeated (--repeats, default 3), rounds interleaved; aggregate tokens/s is the
median over the repeats with its range, latencies are pooled over them.

Then a load test with disconnecting clients, on each model's first (--max-batch 16) server:
5 rounds of 32 streaming clients, half of which close their connection after 4 chunks; after
the rounds the server must still answer /health and a normal request, and its RSS after the
last round must be within 5 % of its RSS after the first.

    python benchmarks/serving.py --repeats 2      # ~12 minutes on 2 cores
    python benchmarks/serving.py --ckpt out/shakespeare-char   # a trained char model
    python benchmarks/serving.py --quick          # a tiny model, a few requests: a smoke test
    python benchmarks/serving.py --no-char --streams 16 --no-disconnect --quantize int8
                                  # GPT-2 124M served with int8 weights (benchmarks/quantize.py)

Prints a table and writes benchmarks/results/serving.json (not with --quick). Run it alone:
the clients share the 2 cores with the server, and anything else running slows both.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from lora import make_base  # the sibling benchmark: a GPT-2-shaped random checkpoint
from provenance import provenance
from quality import machine  # the sibling benchmark script: one machine description

from gptscratch.model.quantize import QUANTIZE

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "serving.json"
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
FIXTURE = REPO / "tests" / "fixtures" / "plays.txt"  # --quick's corpus: in the repository
TEMPERATURE = 0.8
FLAT = 0.05  # the disconnect test's RSS margin, round 1 to the last round


@dataclass(frozen=True)
class Setting:
    model: str
    max_tokens: int
    batches: tuple[int, ...]  # one server per --max-batch
    per_stream: int  # requests per stream in a row (a row sends max(per_stream * c, 4))
    corpus: Path = CORPUS  # the prompts' (and the char model's training) text


def prompts(corpus: Path, n: int, chars: int = 24) -> list[str]:
    lines = [ln[:chars] for ln in corpus.read_text().splitlines() if len(ln) >= 12]
    step = max(1, len(lines) // n)
    return [lines[i * step] for i in range(n)]


def train_char(folder: Path, corpus: Path, quick: bool) -> Path:
    out = folder / "char"
    tiny = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "64",
            "--batch-size", "4"] if quick else []
    steps = "2" if quick else "50"
    subprocess.run([sys.executable, "-m", "gptscratch", "train", "--preset", "shakespeare-char",
                    "--data", str(corpus), "--out", str(out), "--max-iters", steps,
                    "--max-time", "0", "--eval-iters", "2", "--eval-interval", steps,
                    "--sample-tokens", "0", "--eval-sample-tokens", "0", "--dtype", "float32",
                    "--device", "cpu", "--no-compile", *tiny],
                   check=True, capture_output=True)
    return out


def memory(pid: int) -> dict[str, float]:
    """The process's resident set now (VmRSS) and at its peak (VmHWM), in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return {k: round(int(fields[f"Vm{k[:3]}"].split()[0]) / 1024, 1)
            for k in ("RSS_mib", "HWM_mib")}


class Server:
    """`gptscratch serve` in a subprocess on a free loopback port, until stopped."""

    def __init__(self, ckpt: Path, max_batch: int, log: Path, quantize: str = "none") -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gptscratch", "serve", "--ckpt", str(ckpt), "--port",
             str(self.port), "--max-batch", str(max_batch), "--dtype", "float32", "--device",
             "cpu", "--quantize", quantize], stdout=self.log, stderr=subprocess.STDOUT)
        self.log_path = log
        deadline = time.monotonic() + 180
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def memory(self) -> dict[str, float]:
        return memory(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C, as a user stops it
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def stream(port: int, prompt: str, max_tokens: int, seed: int,
           leave_after: int | None = None) -> dict[str, Any]:
    """One streamed completion: its time to first text, latency and tokens, or its failure;
    with `leave_after`, the client closes the connection after that many chunks."""
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": TEMPERATURE,
                       "seed": seed, "stream": True, "stream_options": {"include_usage": True}})
    out: dict[str, Any] = {"ok": False, "tokens": 0}
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            out["error"] = f"HTTP {response.status}: {response.read()[:200]!r}"
            return out
        chunks, done = 0, False
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            chunk = json.loads(line[6:])
            if "error" in chunk:
                out["error"] = chunk["error"]["message"]
                return out
            if chunk["choices"] and chunk["choices"][0]["text"] and "ttft_s" not in out:
                out["ttft_s"] = time.perf_counter() - start
            if chunk.get("usage"):
                out["tokens"] = chunk["usage"]["completion_tokens"]
            chunks += 1
            if leave_after is not None and chunks >= leave_after:
                out.update(ok=True, left=True)
                return out  # the `finally` closes the socket mid-stream
        out["latency_s"] = time.perf_counter() - start
        if not done:
            out["error"] = "the stream ended without [DONE]"
        elif out["tokens"] != max_tokens:
            out["error"] = f"{out['tokens']} tokens, not {max_tokens}"
        else:
            out["ok"] = True
    except Exception as e:  # a benchmark counts failures; it does not stop at the first
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    return out


def burst(port: int, texts: list[str], seeds: list[int], streams: int,
          max_tokens: int) -> tuple[list[dict[str, Any]], float]:
    """Send every request with `streams` in flight at once; (results, wall seconds)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda ps: stream(port, ps[0], max_tokens, ps[1]),
                                zip(texts, seeds, strict=True)))
    return results, time.perf_counter() - start


def baseline(loaded: Any, texts: list[str], seeds: list[int],
             max_tokens: int) -> tuple[list[dict[str, Any]], float]:
    """The same requests one after another through our own generation, in this process."""
    from gptscratch import api

    results = []
    start = time.perf_counter()
    for text, seed in zip(texts, seeds, strict=True):
        t0 = time.perf_counter()
        r: dict[str, Any] = {"ok": True}
        for chunk in api.stream_chunks(loaded, text, max_new_tokens=max_tokens,
                                       temperature=TEMPERATURE, seed=seed):
            if chunk.text and "ttft_s" not in r:
                r["ttft_s"] = time.perf_counter() - t0
            if chunk.completion is not None:
                r["tokens"] = len(chunk.completion.token_ids)
        r["latency_s"] = time.perf_counter() - t0
        results.append(r)
    return results, time.perf_counter() - start


def pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


def summarise(runs: list[tuple[list[dict[str, Any]], float]]) -> dict[str, Any]:
    results = [r for rs, _ in runs for r in rs]
    ok = [r for r in results if r["ok"]]
    rates = [sum(r["tokens"] for r in rs if r["ok"]) / wall for rs, wall in runs]
    ttft = [r["ttft_s"] for r in ok if "ttft_s" in r]
    latency = [r["latency_s"] for r in ok]
    return {
        "requests": len(results), "failed": len(results) - len(ok),
        "errors": sorted({r["error"] for r in results if not r["ok"]})[:5],
        "tok_s": round(statistics.median(rates), 1),
        "tok_s_range": [round(min(rates), 1), round(max(rates), 1)],
        "stream_tok_s": round(statistics.median(r["tokens"] / r["latency_s"] for r in ok), 1)
        if ok else None,
        "ttft_p50_s": pct(ttft, 50), "ttft_p95_s": pct(ttft, 95),
        "latency_p50_s": pct(latency, 50), "latency_p95_s": pct(latency, 95)}


def disconnect_test(server: Server, setting: Setting, rounds: int,
                    clients: int) -> dict[str, Any]:
    """Rounds of streaming clients, every other one leaving after 4 chunks; the server's RSS
    after each round, then /health and a normal request."""
    texts = prompts(setting.corpus, clients)
    rss, walls, left, failed = [], [], 0, 0
    for k in range(rounds):
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(
                lambda i: stream(server.port, texts[i], setting.max_tokens, 5000 + i,
                                 4 if i % 2 else None), range(clients)))
        walls.append(round(time.perf_counter() - start, 2))
        left += sum(1 for r in results if r.get("left"))
        failed += sum(1 for r in results if not r["ok"])
        time.sleep(0.5)  # let the engine drop the rows of the clients that left
        rss.append(server.memory()["RSS_mib"])
        print(f"  disconnect round {k + 1}: {walls[-1]} s, RSS {rss[-1]} MiB", flush=True)
    after = stream(server.port, texts[0], setting.max_tokens, 1)
    growth = (rss[-1] - rss[0]) / rss[0]
    return {"rounds": rounds, "clients_per_round": clients, "left_early": left,
            "failed": failed, "round_s": walls, "rss_after_each_round_mib": rss,
            "rss_growth_first_to_last": round(growth, 4),
            "healthy_after": server.healthy(), "request_after_ok": after["ok"],
            "flat": growth <= FLAT,
            "survived": server.healthy() and after["ok"] and failed == 0}


def run_model(setting: Setting, ckpt: Path, tmp: Path, levels: list[int], repeats: int,
              disconnect: tuple[int, int], quantize: str = "none") -> dict[str, Any]:
    from gptscratch import api

    loaded = api.load(ckpt, device="cpu", dtype="float32", quantize=quantize)
    count = {c: max(setting.per_stream * c, 4) for c in levels}
    texts = prompts(setting.corpus, max(count.values()))
    seeds = [1000 + i for i in range(len(texts))]
    base_n = count[16] if 16 in count else count[levels[-1]]
    out: dict[str, Any] = {"max_tokens": setting.max_tokens, "servers": []}
    base_runs: list[tuple[list[dict[str, Any]], float]] = []
    for max_batch in setting.batches:
        server = Server(ckpt, max_batch, tmp / f"{setting.model}-{max_batch}.log", quantize)
        try:
            started = server.memory()
            burst(server.port, texts[:4], seeds[:4], 4, setting.max_tokens)  # warm-up
            idle = server.memory()
            runs: dict[int, list[tuple[list[dict[str, Any]], float]]] = {c: [] for c in levels}
            for k in range(repeats):  # rounds interleaved, so a slow spell hits every row
                if max_batch == setting.batches[0]:
                    if k == 0:
                        baseline(loaded, texts[:1], seeds[:1], setting.max_tokens)  # warm-up
                    base_runs.append(baseline(loaded, texts[:base_n], seeds[:base_n],
                                              setting.max_tokens))
                    print(f"  {setting.model} baseline round {k + 1}: "
                          f"{summarise(base_runs[-1:])['tok_s']} tok/s", flush=True)
                for c in levels:
                    n = count[c]
                    runs[c].append(burst(server.port, texts[:n], seeds[:n], c,
                                         setting.max_tokens))
                    s = summarise(runs[c][-1:])
                    print(f"  {setting.model} max-batch {max_batch} round {k + 1}: {c:2d} "
                          f"streams {s['tok_s']:8.1f} tok/s, ttft p95 {s['ttft_p95_s']} s, "
                          f"{s['failed']} failed", flush=True)
            entry: dict[str, Any] = {
                "max_batch": max_batch, "rows": [{"streams": c, **summarise(runs[c])}
                                                 for c in levels],
                "memory": {"after_start": started, "idle_after_warmup": idle,
                           "after_rows": server.memory()}}
            if max_batch == setting.batches[0] and disconnect[0]:
                entry["disconnect"] = disconnect_test(server, setting, *disconnect)
                entry["memory"]["after_disconnect_test"] = server.memory()
        finally:
            server.stop()
        log = server.log_path.read_text()
        bad = [ln for ln in log.splitlines() if "Traceback" in ln or "ERROR" in ln]
        entry["server_log_errors"] = {"lines": len(bad), "first": bad[:3]}
        out["servers"].append(entry)
    out["baseline"] = {"requests_per_round": base_n, **summarise(base_runs)}
    return out


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'model':17} {'batch':>5} {'streams':>7} {'tok/s (median, range)':>24} "
          f"{'per-stream':>10} {'TTFT p50/p95':>14} {'latency p50/p95':>16} {'failed':>7}")
    for name, m in results["models"].items():
        b = m["baseline"]
        print(f"{name:17} {'-':>5} {'seq.':>7} {b['tok_s']:>10.1f} ({b['tok_s_range'][0]:.1f}-"
              f"{b['tok_s_range'][1]:.1f}) {b['stream_tok_s']:>10} {b['ttft_p50_s']:>6}/"
              f"{b['ttft_p95_s']:<7} {b['latency_p50_s']:>7}/{b['latency_p95_s']:<8} "
              f"{b['failed']:>4}/{b['requests']}")
        for s in m["servers"]:
            for r in s["rows"]:
                lo, hi = r["tok_s_range"]
                print(f"{name:17} {s['max_batch']:>5} {r['streams']:>7} {r['tok_s']:>10.1f} "
                      f"({lo:.1f}-{hi:.1f}) {r['stream_tok_s']!s:>10} {r['ttft_p50_s']!s:>6}/"
                      f"{r['ttft_p95_s']!s:<7} {r['latency_p50_s']!s:>7}/"
                      f"{r['latency_p95_s']!s:<8} {r['failed']:>4}/{r['requests']}")
            print(f"{'':17} server memory (MiB): {s['memory']}")
            print(f"{'':17} error lines in the server's log: {s['server_log_errors']}")
            if "disconnect" in s:
                print(f"{'':17} disconnect test: {s['disconnect']}")
    print("\ntargets:")
    for t in results["targets"]:
        print(f"  {'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['measured']}")


def targets(models: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def row(model: str, batch: int, streams: int) -> dict[str, Any] | None:
        for s in models.get(model, {}).get("servers", []):
            if s["max_batch"] == batch:
                return next((r for r in s["rows"] if r["streams"] == streams), None)
        return None

    big = row("124M", 16, 16)
    if big is not None:
        ratio = big["tok_s"] / models["124M"]["baseline"]["tok_s"]
        out.append({"target": "124M, 16 streams: aggregate tok/s >= 4x the sequential baseline",
                    "measured": f"{ratio:.2f}x", "met": ratio >= 4})
    for batch in (16, 64):
        for streams in (16, 64):
            r = row("shakespeare-char", batch, streams)
            if r is not None:
                out.append({"target": f"shakespeare-char, --max-batch {batch}, {streams} "
                                      "streams: TTFT p95 < 2 s",
                            "measured": f"{r['ttft_p95_s']} s",
                            "met": r["ttft_p95_s"] is not None and r["ttft_p95_s"] < 2})
    for name, m in models.items():
        for s in m["servers"]:
            r = row(name, s["max_batch"], 64)
            if r is not None:
                out.append({"target": f"{name}, --max-batch {s['max_batch']}, 64 streams: no "
                                      "request lost or failed",
                            "measured": f"{r['failed']} of {r['requests']} failed",
                            "met": r["failed"] == 0})
            d = s.get("disconnect")
            if d is not None:
                out.append({"target": f"{name}: survives disconnecting clients, RSS flat "
                                      f"(<= {FLAT:.0%} growth)",
                            "measured": f"survived={d['survived']}, RSS "
                                        f"{d['rss_after_each_round_mib']} MiB",
                            "met": d["survived"] and d["flat"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", default=None, help="a trained shakespeare-char run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-124m", action="store_true", help="the char model only")
    parser.add_argument("--no-char", action="store_true", help="the 124M model only")
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 4, 16, 64],
                        help="concurrent streams of the rows (the baseline serves the 16-stream "
                             "row's requests, or the last row's)")
    parser.add_argument("--no-disconnect", action="store_true",
                        help="leave out the disconnecting-clients load test")
    parser.add_argument("--quantize", default="none", choices=QUANTIZE,
                        help="serve (and run the baseline) with int8 Linear weights")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny model: a smoke test, saved only to --out")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default benchmarks/results/serving.json)")
    args = parser.parse_args()
    if not (args.quick or CORPUS.is_file()):
        sys.exit(f"error: {CORPUS} not found; this benchmark needs ../shared/data")
    began = time.time()
    settings = [Setting("shakespeare-char", 96, (16, 64), 2), Setting("124M", 32, (16,), 1)]
    levels, repeats = args.streams, args.repeats
    disconnect = (0, 0) if args.no_disconnect else (5, 32)
    if args.quick:
        settings = [Setting("shakespeare-char", 16, (4,), 1, FIXTURE)]  # tests: no ../shared
        levels, repeats, disconnect = [1, 4], 1, (2, 4)
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gptscratch-serving-") as tmp_name:
        tmp = Path(tmp_name)
        for setting in settings:
            if setting.model == "124M" and args.no_124m or setting.model != "124M" and args.no_char:
                continue
            if setting.model == "124M":
                ckpt = make_base("124M", tmp)
            else:
                ckpt = (Path(args.ckpt) if args.ckpt
                        else train_char(tmp, setting.corpus, args.quick))
            print(f"{setting.model}: {ckpt}", flush=True)
            models[setting.model] = run_model(setting, ckpt, tmp, levels, repeats, disconnect,
                                              args.quantize)
    command = "python benchmarks/serving.py " + " ".join(sys.argv[1:])
    result = {"date": date.today().isoformat(), "machine": machine(), "command": command.strip(),
              "provenance": provenance("float32"),
              "minutes": round((time.time() - began) / 60, 1),
              "settings": {"temperature": TEMPERATURE, "dtype": "float32",
                           "quantize": args.quantize, "streams": levels,
                           "repeats": repeats, "cpus": os.cpu_count()},
              "models": models, "targets": targets(models)}
    print_table(result)
    out = args.out if args.quick else args.out or RESULTS
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
