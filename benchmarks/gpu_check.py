"""GPU check: what only a CUDA GPU can tell, in one command that finishes in under 8 minutes.

    benchmarks/gpu_check.sh                      # one CUDA GPU: a table, and
                                                 # benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --cpu-smoke   # the same logic on CPU, tiny, well under a
                                                 # minute; JSON to a temporary file (or --out)

It needs only the repository and the installed package (no data, no downloads). Each part runs
in subprocesses of its own under a time limit; a part that fails or runs out of time is
recorded as such and the others still run (the exit status is 1 if any part failed):

1. cuda_tests: the tests about CUDA (`pytest -m "not slow" -k cuda` over tests/unit and
   tests/integration: `test_cuda_batches_match_cpu`, skipped without CUDA; the CUDA branches
   tested everywhere with mocks; and the CLI's "needs a CUDA GPU" errors of
   `test_bad_settings`, whose parameters name CUDA), counted from pytest's JUnit XML (a test
   skipped on a CUDA machine counts against the part); then the trainer
   end to end on the GPU (`gptscratch train --device cuda`, 40 steps of the shakespeare-char
   preset on the fixture plays), as the README's CUDA example does (that example is skipped
   by tests/slow/test_readme_examples.py without CUDA).
2. throughput: training tokens/s and MFU at GPT-2 124M, batch 16 x 1,024, bf16 autocast,
   eager and torch.compile, each row in a fresh process: ours with GPT-2's recipe (fused
   AdamW); Hugging Face `GPT2LMHeadModel` with attn_implementation="sdpa", like for like
   (same shape, GELU kernel, batch, data, optimizer, loss; built by benchmarks/training.py's
   `build`); and ours with the modern recipe (`presets.MODERN_RECIPE`: RoPE, RMSNorm,
   QK-norm, ReLU^2, zero-init projections, softcap 15, Muon). Compiled rows compare with
   compiled rows, eager with eager. tokens/s is the median of 20 timed steps after 5 warm-up
   steps; MFU is `mfu.flops_per_token` x tokens/s over `mfu.peak_flops` (the GPU's dense bf16
   data-sheet peak). First, a flash-only SDPA forward and backward says whether the flash
   kernel takes each model's attention calls.
3. loss_curves: a 6-layer 384-wide model trained 200 steps (bf16 autocast, eager) with each
   recipe on generated tokens with a rule to learn, x[t] = perm(x[t-1]) with 10% noise, whose
   lowest possible loss is known (`loss_floor`, 0.88 nats for 256 ids); starting near ln V,
   the mean loss of the last 10 steps must end within 0.3 nats above it (and not below it:
   that would mean the model sees the future).
4. generation: KV-cache decoding tokens/s of the 124M shape (random weights, bf16) at batch 1
   and 16, 256 new tokens after a 16-token prompt, through `model.decoding.Decoder`, each
   step's tokens copied to the host as streaming does.

`--cpu-smoke` runs the same parts at tiny sizes in fp32 without compiling, on one thread (the
Hugging Face row when transformers is installed); cuda_tests reports "skipped: no CUDA".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from gptscratch.model.config import ModelConfig
from gptscratch.model.decoding import Decoder
from gptscratch.model.gpt import GPT, lm_loss
from gptscratch.runtime.cpu import keep_freed_memory
from gptscratch.training.config import OptimConfig, TrainConfig
from gptscratch.training.mfu import flops_per_token, peak_flops
from gptscratch.training.optimizer import lr_at, make_optimizer
from gptscratch.training.presets import MODERN_RECIPE

# The sibling benchmark scripts (training.py's model builder, generation.py's shapes,
# quality.py's machine line) are imported where a part uses them, in its own child process:
# a sibling that fails to import fails that part only.
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "gpu_check.json"
MARK = "GPU_CHECK_RESULT "  # a child's result lines start with this; anything else is noise
TRAIN_FIELDS = TrainConfig.field_names()
MODERN_MODEL = {k: v for k, v in MODERN_RECIPE.items() if k not in TRAIN_FIELDS}
MODERN_TRAIN = {k: v for k, v in MODERN_RECIPE.items() if k in TRAIN_FIELDS}
# GPT-2's value of every option the modern recipe changes (ModelConfig's defaults): a shape
# plus one of these two dicts is one recipe, whatever the presets say at the time.
GPT2_MODEL = {k: getattr(ModelConfig(), k) for k in MODERN_MODEL}
GPT2_124M = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                 bias=True, dropout=0.0)  # biases on, as GPT-2 (and HF's model) has them
NOISE = 0.1  # the share of generated tokens drawn at random in the loss-curve data


@dataclass(frozen=True)
class Plan:
    """The sizes and time limits of one mode: a CUDA GPU, or the CPU smoke test."""

    device: str
    dtype: str  # "bfloat16" (autocast) or "float32"
    compiled: tuple[bool, ...]  # throughput rows: eager, and compiled where True is listed
    train_model: dict[str, Any]  # the throughput rows' shape (ModelConfig fields)
    train_batch: int
    train_seq: int
    train_steps: int  # timed, after the warm-up steps
    train_warmup: int
    curve_model: tuple[int, int, int]  # n_layer, n_head, n_embd
    curve_vocab: int
    curve_seq: int
    curve_batch: int
    curve_steps: int
    curve_lr: float  # AdamW's peak rate (Muon's is OptimConfig's muon_lr)
    curve_margin: float  # nats above the floor the final loss must reach
    gen_shape: str  # a key of benchmarks/generation.py's shapes()
    gen_tokens: int
    budget_s: float  # every part together; throughput gets what the others leave
    limits: dict[str, float]  # seconds: pytest, cli_train, loss_curves, generation, a row


# The loss-curve sizes were tried on CPU in fp32: a 6-layer 128-wide stand-in for the GPU
# model, at batch 8 instead of 32, ended at 0.95 with either recipe (floor 0.88, threshold
# 1.18), learning most of the rule by step 100; the smoke sizes end within 0.05 of the floor.
# The throughput rows' sizes are benchmarks/training.py's for 124M on CUDA.
GPU = Plan(device="cuda", dtype="bfloat16", compiled=(False, True), train_model=GPT2_124M,
           train_batch=16, train_seq=1024, train_steps=20, train_warmup=5,
           curve_model=(6, 6, 384), curve_vocab=256, curve_seq=128, curve_batch=32,
           curve_steps=200, curve_lr=1e-3, curve_margin=0.3, gen_shape="124m", gen_tokens=256,
           budget_s=450.0, limits=dict(pytest=90, cli_train=90, loss_curves=75, generation=60,
                                       eager_row=75, compiled_row=180, flash=60))
SMOKE = Plan(device="cpu", dtype="float32", compiled=(False,),
             train_model=dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=64,
                              bias=True, dropout=0.0),
             train_batch=2, train_seq=32, train_steps=5, train_warmup=1, curve_model=(2, 2, 64),
             curve_vocab=16, curve_seq=16, curve_batch=16, curve_steps=60, curve_lr=3e-3,
             curve_margin=0.3, gen_shape="preset", gen_tokens=24, budget_s=120.0,
             limits=dict(pytest=0, cli_train=0, loss_curves=60, generation=40, eager_row=40,
                         compiled_row=40, flash=0))


@dataclass(frozen=True)
class Row:
    """One throughput configuration: whose model, which recipe, compiled or not."""

    impl: str  # "ours" or "hf"
    recipe: str  # "gpt2" or "modern"
    compiled: bool

    @property
    def label(self) -> str:
        sdpa = "-sdpa" if self.impl == "hf" else ""
        return f"{self.impl}-{self.recipe}{sdpa}-{'compiled' if self.compiled else 'eager'}"

    def training_py_row(self, dtype: str) -> str:
        """benchmarks/training.py's name for this model (its `build` and `settings` read it):
        HF like for like, its `-keep` rows, with the same fused tanh GELU kernel as ours."""
        return (f"{self.impl}-{'bf16' if dtype == 'bfloat16' else 'fp32'}"
                f"{'-sdpa-keep' if self.impl == 'hf' else ''}"
                f"{'-compile' if self.compiled else ''}")


def rows_for(plan: Plan) -> list[Row]:
    """Eager rows first (cheap), then compiled ones, each set ours-GPT-2, HF, ours-modern."""
    return [Row(impl, recipe, c) for c in plan.compiled
            for impl, recipe in (("ours", "gpt2"), ("hf", "gpt2"), ("ours", "modern"))]


def recipe_model(fields: dict[str, Any], recipe: str) -> dict[str, Any]:
    return {**fields, **(MODERN_MODEL if recipe == "modern" else GPT2_MODEL)}


def emit(result: dict[str, Any]) -> None:
    """A child's result line, flushed at once: a child killed later keeps what it reported."""
    print(MARK + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# Part 2: training throughput (in children, one row each)
# ---------------------------------------------------------------------------------------------

def time_row(plan: Plan, row: Row) -> dict[str, Any]:
    """Time training steps of one row in this process: ms/step, tokens/s, memory, FLOPs.

    The loop of benchmarks/training.py (`time_steps`: forward, the shared `lm_loss`, backward,
    clipping, optimizer step, a sync, on the same seeded data; the median step after warm-up),
    whose models come from its `build`. run_row itself cannot serve: it takes its shapes from
    its own table (GPT-2's architecture only) and always steps AdamW, where the modern recipe
    steps Muon (`make_optimizer`)."""
    from training import build, rss_mb, settings, time_steps

    device = torch.device(plan.device)
    name = row.training_py_row(plan.dtype)
    if device.type == "cpu" and settings(name)["allocator"] == "keep freed memory":
        keep_freed_memory()  # as run_row does for these rows on CPU
    fields = recipe_model(plan.train_model, row.recipe)
    B, T, steps, warmup = plan.train_batch, plan.train_seq, plan.train_steps, plan.train_warmup
    base_rss = rss_mb()
    model = build(name, fields, device)  # seeds the initialisation
    forward: Any = torch.compile(model) if row.compiled else model
    if row.recipe == "modern":
        optim = TrainConfig().replace(learning_rate=1e-4, weight_decay=0.1, **MODERN_TRAIN).optim
        optimizer = make_optimizer(model, optim, device)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    times, loss = time_steps(model, forward, optimizer, fields["vocab_size"], (B, T),
                             steps + warmup, device, plan.dtype == "bfloat16", row.impl == "hf")
    ms = statistics.median(times[warmup:]) * 1000
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else rss_mb() - base_rss)
    # Parameters in matmuls: the tied embedding once (as the head), a position table not.
    n_params = sum(p.numel() for p in model.parameters())
    if fields["positions"] == "learned":
        n_params -= fields["block_size"] * fields["n_embd"]
    return {"row": row.label, "training_py_row": name, "batch": B, "seq_len": T,
            "timed_steps": steps, "warmup_steps": warmup, "ms_per_step": round(ms, 2),
            "tokens_per_s": round(B * T / ms * 1000), "first_step_s": round(times[0], 2),
            "peak_memory_mb": round(peak), "final_loss": round(loss.item(), 4),
            "flops_per_token": flops_per_token(ModelConfig(**{**fields, "block_size": T}),
                                               n_params), "params": n_params}


def child_flash(plan: Plan) -> None:
    """Whether the flash kernel takes each model's attention: one forward and backward of a
    2-layer model of the rows' shape with SDPA restricted to flash, which raises otherwise."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from training import build

    device = torch.device(plan.device)
    for row in rows_for(plan)[:3]:
        if row.impl == "hf" and importlib.util.find_spec("transformers") is None:
            continue
        fields = {**recipe_model(plan.train_model, row.recipe), "n_layer": 2}
        model = build(row.training_py_row("bfloat16"), fields, device)
        x = torch.randint(0, fields["vocab_size"], (2, plan.train_seq), device=device)
        name = row.label.removesuffix("-eager")
        try:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast("cuda", torch.bfloat16):
                logits = model(input_ids=x).logits if row.impl == "hf" else model(x)
                lm_loss(logits, x).backward()
            emit({"model": name, "flash": True})
        except RuntimeError as e:
            emit({"model": name, "flash": False, "why": str(e).strip().splitlines()[0][:300]})


# ---------------------------------------------------------------------------------------------
# Part 3: loss curves on generated tokens (one child, both recipes)
# ---------------------------------------------------------------------------------------------

def structured_tokens(n: int, T: int, V: int, noise: float, seed: int) -> torch.Tensor:
    """(n, T + 1) int64 sequences with a rule to learn: x[t] = perm(x[t-1]) for a fixed random
    permutation of the V ids, except that each token after the first is, with probability
    `noise`, drawn uniformly instead. The LM head is the token embedding (tied), which scores
    a token highest for itself, so mapping x to perm(x) is the blocks' work."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(V, generator=gen)
    seq = torch.randint(0, V, (n, T + 1), generator=gen)  # the first tokens, and the noise
    noisy = torch.rand(n, T + 1, generator=gen) < noise
    for t in range(1, T + 1):
        seq[:, t] = torch.where(noisy[:, t], seq[:, t], perm[seq[:, t - 1]])
    return seq


def loss_floor(V: int, noise: float) -> float:
    """The lowest mean cross-entropy (nats) on `structured_tokens`, that of the true
    next-token distribution: perm(x) with probability 1 - noise + noise / V, each other id
    noise / V. A model scoring below it (by more than chance) sees tokens it should not: a
    causal mask that leaks the future."""
    q, r = 1 - noise + noise / V, noise / V
    return -(q * math.log(q) + (V - 1) * r * math.log(r))


def train_curve(plan: Plan, recipe: str) -> dict[str, Any]:
    device = torch.device(plan.device)
    L, H, C = plan.curve_model
    V, T, B, steps, lr = (plan.curve_vocab, plan.curve_seq, plan.curve_batch, plan.curve_steps,
                          plan.curve_lr)
    fields = recipe_model(dict(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C,
                               dropout=0.0, bias=False), recipe)
    train = dict(learning_rate=lr, min_lr=lr / 10, warmup_iters=steps // 10, weight_decay=0.1,
                 **(MODERN_TRAIN if recipe == "modern" else {}))
    torch.manual_seed(0)
    model = GPT(ModelConfig(**fields)).to(device)
    optim: OptimConfig = TrainConfig().replace(**train).optim
    optimizer = make_optimizer(model, optim, device)
    data = structured_tokens(steps * B, T, V, NOISE, seed=1).view(steps, B, T + 1)
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        # The trainer's rule (loop.train_step): every group gets AdamW's rate; Muon scales it.
        rate = lr_at(step, optim.learning_rate, optim.min_lr, optim.warmup_iters, step / steps)
        for group in optimizer.param_groups:
            group["lr"] = rate
        x, y = data[step, :, :-1].to(device), data[step, :, 1:].to(device)
        with torch.autocast(device.type, torch.bfloat16, enabled=plan.dtype == "bfloat16"):
            loss = lm_loss(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    curve = torch.stack(losses).float().tolist()
    floor = loss_floor(V, NOISE)
    final = statistics.fmean(curve[-10:])  # fresh data every step: this is held-out loss
    threshold = floor + plan.curve_margin
    # Passed: it started untrained (near ln V), learned the rule to within the margin, and
    # did not beat the floor (by 0.1 nats: over 3 standard errors of a 10-step mean here).
    return {"recipe": recipe, "first_loss": round(curve[0], 4), "final_loss": round(final, 4),
            "floor": round(floor, 4), "threshold": round(threshold, 4),
            "passed": abs(curve[0] - math.log(V)) < 0.5 and floor - 0.1 < final < threshold,
            "seconds": round(time.perf_counter() - start, 2), "steps": steps,
            "curve_every_10": [round(v, 3) for v in curve[::10]]}


def child_loss_curves(plan: Plan) -> None:
    for recipe in ("gpt2", "modern"):
        emit(train_curve(plan, recipe))


# ---------------------------------------------------------------------------------------------
# Part 4: generation (one child, both batch sizes)
# ---------------------------------------------------------------------------------------------

def decode_seconds(model: GPT, prompt: torch.Tensor, n: int) -> float:
    """Seconds to prefill `prompt` (B, P) and decode n tokens greedily with the KV cache.
    Each step's ids are copied to the host, as `generation.stream` does for every token: on
    CUDA that also waits for the step, so the clock measures work done, not work queued."""
    from generation import greedy_step

    t = time.perf_counter()
    decoder = Decoder(model, prompt.tolist(), use_cache=True)
    for _ in range(n):
        greedy_step(decoder).tolist()
    return time.perf_counter() - t


def child_generation(plan: Plan) -> None:
    from generation import PROMPT, shapes

    device = torch.device(plan.device)
    config = shapes()[plan.gen_shape]
    torch.manual_seed(0)
    model = GPT(config).to(device)
    if plan.dtype == "bfloat16":
        model = model.to(torch.bfloat16)  # generation runs the weights in bf16 on CUDA
    model.eval()
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 16):
        prompt = torch.randint(0, config.vocab_size, (batch, PROMPT), generator=gen)
        decode_seconds(model, prompt, 8)  # warm the kernels and the allocator
        seconds = decode_seconds(model, prompt, plan.gen_tokens)
        emit({"batch": batch, "new_tokens": plan.gen_tokens, "prompt_tokens": PROMPT,
              "seconds": round(seconds, 3),
              "tokens_per_s": round(batch * plan.gen_tokens / seconds, 1),
              "ms_per_step": round(1000 * seconds / plan.gen_tokens, 2)})


# ---------------------------------------------------------------------------------------------
# The parent: subprocesses with time limits, the parts, the table and the JSON
# ---------------------------------------------------------------------------------------------

def run_limited(cmd: list[str], limit: float, env: dict[str, str] | None = None
                ) -> tuple[int | None, str, str, float]:
    """Run `cmd` in the repository, in a session of its own; past `limit` seconds the whole
    session is killed (torch.compile's worker processes with it). rc None: timed out."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=max(1.0, limit))
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        rc = None
    return rc, out, err, time.perf_counter() - start


def failure(rc: int | None, err: str, limit: float) -> str:
    if rc is None:
        return f"time limit ({limit:.0f} s)"
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return f"exit {rc}: {lines[-1][:300] if lines else 'no message'}"


def run_child(spec: str, smoke: bool, limit: float) -> tuple[list[dict[str, Any]], str | None,
                                                                 float]:
    """A child of this script: its result lines, the reason it failed (None: it did not),
    and its seconds."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", spec,
           *(["--cpu-smoke"] if smoke else [])]
    rc, out, err, seconds = run_limited(cmd, limit)
    results = [json.loads(line[len(MARK):]) for line in out.splitlines() if line.startswith(MARK)]
    return results, None if rc == 0 else failure(rc, err, limit), round(seconds, 1)


def junit_counts(path: Path) -> dict[str, Any]:
    """passed / failed / skipped / errors and each test's outcome, from pytest's JUnit XML."""
    counts: dict[str, Any] = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0, "tests": {}}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = ("failed" if "failure" in kinds else "errors" if "error" in kinds
                   else "skipped" if "skipped" in kinds else "passed")
        counts[outcome] += 1
        counts["tests"][f"{case.get('classname')}::{case.get('name')}"] = outcome
    return counts


def part_cuda_tests(plan: Plan) -> dict[str, Any]:
    if plan.device != "cuda":
        return {"status": "skipped: no CUDA"}
    part: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit",
               "tests/integration", "-m", "not slow", "-k", "cuda", f"--junitxml={xml}"]
        rc, out, err, seconds = run_limited(cmd, plan.limits["pytest"])
        part["pytest"] = {"command": shlex.join(["python", *cmd[1:-1]]),
                          "seconds": round(seconds, 1), "rc": rc,
                          **(junit_counts(xml) if xml.exists() else {})}
        if rc not in (0, 1):  # 1: some failed (counted); else pytest itself did not finish
            part["pytest"]["error"] = failure(rc, out + err, plan.limits["pytest"])
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "gptscratch", "train", "--preset",
               "shakespeare-char", "--data", "tests/fixtures/plays.txt", "--out", str(run),
               "--device", "cuda", "--max-iters", "40", "--eval-interval", "20",
               "--eval-iters", "2", "--max-time", "0", "--sample-tokens", "20"]
        env = {**os.environ, "GPTSCRATCH_CACHE": str(Path(tmp) / "cache")}
        rc, out, err, seconds = run_limited(cmd, plan.limits["cli_train"], env)
        saved = (run / "latest").is_dir()
        part["cli_train"] = {"command": shlex.join(["gptscratch", *cmd[3:]]).replace(tmp, "TMP"),
                             "seconds": round(seconds, 1), "rc": rc, "checkpoint_saved": saved}
        if rc != 0 or not saved:
            part["cli_train"]["error"] = failure(rc, err, plan.limits["cli_train"])
    p = part["pytest"]
    problems = [*([f"pytest: {p['error']}"] if "error" in p else []),
                *([f"{p['failed'] + p['errors']} tests failed"]
                  if p.get("failed", 0) + p.get("errors", 0) else []),
                *([f"{p['skipped']} CUDA tests skipped on a CUDA machine"]
                  if p.get("skipped") else []),
                *([f"cli_train: {part['cli_train']['error']}"] if "error" in part["cli_train"]
                  else [])]
    return {"status": "failed: " + "; ".join(problems) if problems else "ok", **part}


def part_throughput(plan: Plan, smoke: bool, deadline: float) -> dict[str, Any]:
    device = torch.device(plan.device)
    part: dict[str, Any] = {"rows": []}
    problems: list[str] = []
    peak = None
    try:
        dtype = torch.bfloat16 if plan.dtype == "bfloat16" else torch.float32
        peak, part["peak_source"] = peak_flops(device, dtype)
        part["peak_tflops"] = round(peak / 1e12, 3)
    except Exception as e:  # MFU is then missing; tokens/s still counts
        part["peak_error"] = f"{type(e).__name__}: {e}"
    part["flash"] = "skipped: no CUDA"
    if device.type == "cuda":
        part["flash"], error, _ = run_child("flash", smoke, min(plan.limits["flash"],
                                                                 deadline - time.perf_counter()))
        problems += [f"flash probe: {error}"] if error else []
        problems += [f"{r['model']}: no flash kernel" for r in part["flash"]
                     if not r["flash"] and r["model"].startswith("ours")]
    has_hf = importlib.util.find_spec("transformers") is not None
    for row in rows_for(plan):
        cap = plan.limits["compiled_row" if row.compiled else "eager_row"]
        left = deadline - time.perf_counter()
        info = {"row": row.label, "impl": row.impl, "recipe": row.recipe,
                "compiled": row.compiled}
        if row.impl == "hf" and not has_hf:
            part["rows"].append({**info, "status": "skipped: transformers not installed"})
            continue
        if left < min(cap, 20.0):
            part["rows"].append({**info, "status": "failed: not run, the time budget was spent"})
            problems.append(f"{row.label}: not run (time budget)")
            continue
        results, error, seconds = run_child(f"row:{row.label}", smoke, min(cap, left))
        r = {**info, **(results[0] if results else {}), "process_s": seconds}
        r["status"] = "ok" if error is None and results else f"failed: {error or 'no result'}"
        if peak and "tokens_per_s" in r:
            r["mfu"] = round(r["tokens_per_s"] * r["flops_per_token"] / peak, 4)
        problems += [f"{row.label}: {r['status']}"] if r["status"] != "ok" else []
        part["rows"].append(r)
        print(f"  {row.label:<24} {r.get('tokens_per_s', '-'):>10} tok/s  {r['status']}",
              flush=True)
    part["ratios"], gaps = throughput_ratios(part["rows"])
    part["final_loss_gap_compiled_vs_eager"] = gaps
    # Same seed, weights and data: compiling may round differently, not train differently.
    problems += [f"{k}: compiled and eager final losses differ by {v}"
                 for k, v in gaps.items() if v > 0.05]
    return {"status": "failed: " + "; ".join(problems) if problems else "ok", **part}


def throughput_ratios(rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """tokens/s ratios of like with like (both compiled or both eager), and how far each
    compiled row's final loss is from its eager twin's."""
    tok = {r["row"]: r["tokens_per_s"] for r in rows if "tokens_per_s" in r}
    loss = {r["row"]: r["final_loss"] for r in rows if "final_loss" in r}
    ratios: dict[str, float] = {}
    for mode in ("eager", "compiled"):
        pairs = {f"ours_gpt2_over_hf_{mode}": (f"ours-gpt2-{mode}", f"hf-gpt2-sdpa-{mode}"),
                 f"ours_modern_over_ours_gpt2_{mode}": (f"ours-modern-{mode}",
                                                        f"ours-gpt2-{mode}")}
        for name, (a, b) in pairs.items():
            if a in tok and b in tok:
                ratios[name] = round(tok[a] / tok[b], 3)
    gaps: dict[str, float] = {}
    for base in ("ours-gpt2", "hf-gpt2-sdpa", "ours-modern"):
        a, b = f"{base}-compiled", f"{base}-eager"
        if a in tok and b in tok:
            ratios[f"{base}_compiled_over_eager"] = round(tok[a] / tok[b], 3)
        if a in loss and b in loss:
            gaps[base] = round(abs(loss[a] - loss[b]), 4)
    return ratios, gaps


def part_from_child(name: str, key: str, plan: Plan, smoke: bool, deadline: float,
                    expected: list[Any]) -> dict[str, Any]:
    """A part that is one child: its results keyed by `key`, each expected one present."""
    limit = min(plan.limits[name], deadline - time.perf_counter())
    if limit < 5:
        return {"status": "failed: not run, the time budget was spent"}
    results, error, _ = run_child(name, smoke, limit)
    found = {r[key]: r for r in results}
    problems = [*([error] if error else []),
                *(f"no result for {key} {k}" for k in expected if k not in found),
                *(f"{key} {r[key]}: loss {r['first_loss']} -> {r['final_loss']}, not between "
                  f"the floor {r['floor']} (less 0.1) and {r['threshold']}"
                  for r in results if r.get("passed") is False)]
    return {"status": "failed: " + "; ".join(problems) if problems else "ok",
            "results": results}


def machine_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        from quality import machine

        description = machine()
    except Exception as e:  # the sibling script broken: say so, keep the rest
        description = f"unknown ({type(e).__name__}: {e})"
    info: dict[str, Any] = {"description": description, "python": platform.python_version(),
                            "torch": torch.__version__, "cuda": torch.version.cuda, "gpu": None}
    try:
        info["transformers"] = version("transformers")
    except PackageNotFoundError:
        info["transformers"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}",
                    cudnn=torch.backends.cudnn.version(), gpus=torch.cuda.device_count())
    return info


def table(report: dict[str, Any]) -> str:
    """One Markdown table of every figure and status."""
    lines = ["| part | check | result | status |", "|---|---|---|---|"]

    def add(part: str, check: str, result: str, status: str = "") -> None:
        lines.append(f"| {part} | {check} | {result} | {status} |")

    parts = report["parts"]
    tests = parts["cuda_tests"]
    if "pytest" in tests:
        p = tests["pytest"]
        add("cuda_tests", "pytest -k cuda", f"{p.get('passed', 0)} passed, {p.get('failed', 0)} "
            f"failed, {p.get('skipped', 0)} skipped, {p.get('errors', 0)} errors "
            f"({p['seconds']} s)", p.get("error", ""))
        c = tests["cli_train"]
        add("cuda_tests", "gptscratch train --device cuda", f"exit {c['rc']}, checkpoint "
            f"{'saved' if c['checkpoint_saved'] else 'missing'} ({c['seconds']} s)",
            c.get("error", "ok"))
    add("cuda_tests", "part", "", tests["status"])
    t = parts["throughput"]
    for f in t.get("flash", []) if isinstance(t.get("flash"), list) else []:
        add("throughput", f"flash SDPA: {f['model']}", "flash kernel" if f["flash"]
            else f"no flash: {f['why']}")
    for r in t.get("rows", []):
        mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "?"
        figures = (f"{r['tokens_per_s']:,} tok/s, MFU {mfu}, "
                   f"{r['ms_per_step']} ms/step (B {r['batch']} x T {r['seq_len']}), peak "
                   f"{r['peak_memory_mb']:,} MB, 1st step {r['first_step_s']} s"
                   if "tokens_per_s" in r else "")
        add("throughput", r["row"], figures, r["status"])
    for k, v in t.get("ratios", {}).items():
        add("throughput", k, f"{v}x")
    add("throughput", "part", f"MFU against {t.get('peak_tflops', '?')} TFLOP/s "
        f"({t.get('peak_source', t.get('peak_error', ''))})", t["status"])
    for r in parts["loss_curves"].get("results", []):
        add("loss_curves", r["recipe"], f"{r['first_loss']} -> {r['final_loss']} in "
            f"{r['steps']} steps (floor {r['floor']}, threshold {r['threshold']}, "
            f"{r['seconds']} s)", "ok" if r["passed"] else "failed")
    add("loss_curves", "part", "", parts["loss_curves"]["status"])
    for r in parts["generation"].get("results", []):
        add("generation", f"batch {r['batch']}", f"{r['tokens_per_s']:,} tok/s, "
            f"{r['ms_per_step']} ms/step ({r['new_tokens']} new tokens)")
    add("generation", "part", "", parts["generation"]["status"])
    return "\n".join(lines)


def run_child_part(plan: Plan, spec: str) -> None:
    if spec.startswith("row:"):
        emit(time_row(plan, next(r for r in rows_for(plan) if r.label == spec[4:])))
    elif spec == "flash":
        child_flash(plan)
    elif spec == "loss_curves":
        child_loss_curves(plan)
    elif spec == "generation":
        child_generation(plan)
    else:
        raise SystemExit(f"unknown child part {spec!r}")


PARTS = ("cuda_tests", "throughput", "loss_curves", "generation")  # as reported


def run_parts(plan: Plan, smoke: bool) -> dict[str, dict[str, Any]]:
    """Every part, the cheap ones first; throughput gets the time the others leave."""
    deadline = time.perf_counter() + plan.budget_s
    steps = {
        "cuda_tests": lambda: part_cuda_tests(plan),
        "loss_curves": lambda: part_from_child("loss_curves", "recipe", plan, smoke, deadline,
                                               ["gpt2", "modern"]),
        "generation": lambda: part_from_child("generation", "batch", plan, smoke, deadline,
                                              [1, 16]),
        "throughput": lambda: part_throughput(plan, smoke, deadline),
    }
    parts: dict[str, dict[str, Any]] = {}
    for name, step in steps.items():
        print(f"[gpu_check] {name} ...", flush=True)
        start = time.perf_counter()
        try:
            parts[name] = step()
        except Exception as e:  # one part's bug must not lose the others' figures
            parts[name] = {"status": f"failed: {type(e).__name__}: {e}"}
        parts[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"[gpu_check] {name}: {parts[name]['status']} ({parts[name]['seconds']} s)",
              flush=True)
    return {name: parts[name] for name in PARTS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="the same logic on CPU at tiny sizes (fp32, no compile), < 1 min")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON to write (default {RESULTS.relative_to(REPO)}; with "
                             "--cpu-smoke a file in the temporary folder)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for every part together (default: 450 on a GPU, 120 "
                             "with --cpu-smoke)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    plan = SMOKE if args.cpu_smoke else GPU
    plan = replace(plan, budget_s=args.budget) if args.budget else plan
    torch.set_flush_denormal(True)
    if args.cpu_smoke:
        torch.set_num_threads(1)  # tiny shapes gain nothing from more; a shared CPU stays steady
    if args.child:
        run_child_part(plan, args.child)
        return 0
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU (torch.cuda.is_available() is False); "
              "run it on a CUDA machine, or test the logic with --cpu-smoke", file=sys.stderr)
        return 2
    out = args.out or (Path(tempfile.gettempdir()) / "gptscratch-gpu-check-smoke.json"
                       if args.cpu_smoke else RESULTS)
    start = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "gpu_check", "mode": "cpu-smoke" if args.cpu_smoke else "cuda",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": os.environ.get("GPU_CHECK_COMMAND")
        or shlex.join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]]),
        "machine": machine_info(), "budget_s": plan.budget_s,
        "sizes": {k: v for k, v in vars(plan).items() if k != "limits"},
        "time_limits_s": plan.limits}
    report["parts"] = run_parts(plan, args.cpu_smoke)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    m = report["machine"]
    where = (f"{m['gpu']}, torch {m['torch']}, CUDA {m['cuda']}" if m["gpu"]
             else m["description"])
    print(f"\ngpu_check ({report['mode']}) on {where}, {report['date']}, {report['wall_s']} s")
    print(table(report))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 1 if any(p["status"].startswith("failed") for p in report["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
