"""GPU check: what only a CUDA GPU can tell, in one command given 535 s (under 9 minutes).

    benchmarks/gpu_check.sh                      # one CUDA GPU: a table, and
                                                 # benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --cpu-smoke   # the same logic on CPU, tiny, well under a
                                                 # minute; JSON to a temporary file (or --out)
    python benchmarks/gpu_check.py --plan        # what a GPU run will do (no GPU needed): the
                                                 # steps, shapes, first losses and budgets

It needs only the repository and the installed package (no data, no downloads). Each step runs
in a subprocess of its own under a time limit; a step that fails or runs out of time is
recorded as such and the others still run (the exit status is 1 if any part failed). Every
step has seconds reserved for it (`Plan.budgets`, in the order of `schedule`); it may use its
own and whatever the steps before it left unused, never the time reserved for the steps after
it (`Budget`), so a slow cold compile cannot cut a later row. The parts:

1. cuda_tests: the tests marked `cuda` (`pytest -m "cuda and not slow"` over tests/unit and
   tests/integration: those that run on a GPU and skip without one, as
   `test_cuda_batches_match_cpu`; the CUDA branches tested everywhere with mocks are not
   marked), counted from pytest's JUnit XML. A test skipped on a CUDA machine counts against
   the part, unless its reason is "a CUDA GPU is present" (a test that only a machine without
   one can run); a run in which none passed fails. Then the trainer end to end on the GPU
   (`gptscratch train --device cuda`, 40 steps of the shakespeare-char preset on the fixture
   plays), as the README's CUDA example does (that example is skipped by
   tests/slow/test_readme_examples.py without CUDA).
2. throughput: training tokens/s and MFU at GPT-2 124M, batch 16 x 1,024, bf16 autocast,
   compiled rows first (each cold compile has its own reserve), then eager ones, each row in a
   fresh process: ours with GPT-2's recipe (fused AdamW); Hugging Face `GPT2LMHeadModel` with
   attn_implementation="sdpa", like for like (same shape, GELU kernel, batch, data, optimizer,
   loss; built by benchmarks/training.py's `build`); and ours with the modern recipe
   (`presets.MODERN_RECIPE`: RoPE, RMSNorm, QK-norm, ReLU^2, zero-init projections, softcap
   15, Muon). Compiled rows compare with compiled rows, eager with eager. tokens/s is the
   median of 20 timed steps after 5 warm-up steps (a compiled row's first step, its cold
   compile, is reported apart as `first_step_s`); MFU is `mfu.model_flops_utilisation` of
   `mfu.flops_per_token` x tokens/s against `mfu.peak_flops` (the GPU's dense bf16 data-sheet
   peak), unknown (null) rather than above 100 %. First, a flash-only SDPA forward and
   backward says whether the flash kernel takes each model's attention calls.
3. loss_curves: a 6-layer 384-wide model trained 200 steps (bf16 autocast, eager) with each
   recipe on generated tokens with a rule to learn, x[t] = perm(x[t-1]) with 10% noise, whose
   lowest possible loss is known (`loss_floor`, 0.88 nats for 256 ids). Before training, the
   untrained model's loss on the first rows of its first batch, on the device in the plan's
   precision, must be within `START_TOLERANCE` of the same model's loss in fp32 on CPU
   (`expected_first_loss`, which --plan prints). That is not ln V: at this size GPT-2's
   recipe starts at 5.61 and the modern one at 7.18 against ln 256 = 5.55, because its
   zero-initialised branches leave each position's own token embedding as the final hidden
   state, and the tied head then scores the input token about C x 0.02 above the rest. The
   mean loss of the last 10 steps must end within 0.3 nats above the floor (and not below
   it: that would mean the model sees the future).
4. generation: KV-cache decoding tokens/s of the 124M shape (random weights, bf16) at batch 1
   and 16, 256 new tokens after a 16-token prompt, through `model.decoding.Decoder`, each
   step's tokens copied to the host as streaming does.

`--cpu-smoke` runs loss_curves, generation and the eager throughput rows at tiny sizes in fp32
on one thread (the Hugging Face row when transformers is installed); it runs no CUDA test, no
trainer on a GPU, no flash probe, no compiled row and nothing in bf16 (docs/benchmarks.md has
the table).
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from gptscratch.model.config import ModelConfig
from gptscratch.model.decoding import Decoder
from gptscratch.model.gpt import GPT, lm_loss
from gptscratch.model.gpt import count_params as gpt_count_params
from gptscratch.runtime.cpu import keep_freed_memory
from gptscratch.training.config import OptimConfig, TrainConfig
from gptscratch.training.mfu import flops_per_token, model_flops_utilisation, peak_flops
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
    """The sizes and time budgets of one mode: a CUDA GPU, or the CPU smoke test."""

    device: str
    dtype: str  # "bfloat16" (autocast) or "float32"
    compiled: tuple[bool, ...]  # throughput rows: compiled where True is listed, and eager
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
    # Seconds reserved for each kind of step (`schedule` lists the steps): pytest, cli_train,
    # loss_curves, generation, flash, compiled_row and eager_row (each row has its own).
    budgets: dict[str, float]


# The loss-curve sizes were tried on CPU in fp32: a 6-layer 128-wide stand-in for the GPU
# model, at batch 8 instead of 32, ended at 0.95 with either recipe (floor 0.88, threshold
# 1.18), learning most of the rule by step 100; the smoke sizes end within 0.05 of the floor.
# The throughput rows' sizes are benchmarks/training.py's for 124M on CUDA. The GPU budgets
# add up to 535 s, so that the whole check, interpreter starts included, fits in one
# 10-minute command on a lent machine: a cold torch.compile of 124M takes "a ~minute"
# (nanoGPT's train.py), and each compiled row has 80 s of its own plus what the cheap steps
# before it leave (they are reserved several times what they should take: seconds of work
# after a process start).
GPU = Plan(device="cuda", dtype="bfloat16", compiled=(True, False), train_model=GPT2_124M,
           train_batch=16, train_seq=1024, train_steps=20, train_warmup=5,
           curve_model=(6, 6, 384), curve_vocab=256, curve_seq=128, curve_batch=32,
           curve_steps=200, curve_lr=1e-3, curve_margin=0.3, gen_shape="124m", gen_tokens=256,
           budgets=dict(pytest=45, cli_train=60, loss_curves=45, generation=40, flash=30,
                        compiled_row=80, eager_row=25))
SMOKE = Plan(device="cpu", dtype="float32", compiled=(False,),
             train_model=dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=64,
                              bias=True, dropout=0.0),
             train_batch=2, train_seq=32, train_steps=5, train_warmup=1, curve_model=(2, 2, 64),
             curve_vocab=16, curve_seq=16, curve_batch=16, curve_steps=60, curve_lr=3e-3,
             curve_margin=0.3, gen_shape="preset", gen_tokens=24,
             budgets=dict(loss_curves=60, generation=40, eager_row=40))
MODELS = (("ours", "gpt2"), ("hf", "gpt2"), ("ours", "modern"))  # impl, recipe: each row's


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
    """Compiled rows first (a cold compile is the longest step; see Plan), then eager ones,
    each set ours-GPT-2, HF, ours-modern."""
    return [Row(impl, recipe, c) for c in sorted(plan.compiled, reverse=True)
            for impl, recipe in MODELS]


def schedule(plan: Plan) -> list[tuple[str, float]]:
    """Every step of the check in the order it runs, with the seconds reserved for it: the
    cheap parts first, then the throughput rows (whose cold compiles gain what they left)."""
    b = plan.budgets
    cuda = plan.device == "cuda"
    return [*([("cuda_tests:pytest", b["pytest"]), ("cuda_tests:cli_train", b["cli_train"])]
              if cuda else []),
            ("loss_curves", b["loss_curves"]), ("generation", b["generation"]),
            *([("throughput:flash", b["flash"])] if cuda else []),
            *((f"throughput:{row.label}", b["compiled_row" if row.compiled else "eager_row"])
              for row in rows_for(plan))]


class Budget:
    """The check's clock. Each step may run until the deadline less the seconds reserved for
    the steps after it: its own reserve, plus whatever the steps before it left unused.
    `total` (--budget) scales every reserve alike."""

    MIN_START_S = 5.0  # a step with less than this left is not started: no child starts faster

    def __init__(self, steps: list[tuple[str, float]], total: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        reserved = sum(seconds for _, seconds in steps)
        scale = total / reserved if total and reserved else 1.0
        self.reserved = {name: seconds * scale for name, seconds in steps}
        self.after: dict[str, float] = {}
        later = 0.0
        for name, seconds in reversed(self.reserved.items()):
            self.after[name] = later
            later += seconds
        self.total = later
        self.clock = clock
        self.deadline = clock() + later

    def left(self, step: str) -> float:
        """Seconds `step` may run, started now."""
        return self.deadline - self.clock() - self.after[step]


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
    for impl, recipe in MODELS:
        if impl == "hf" and importlib.util.find_spec("transformers") is None:
            continue
        row = Row(impl, recipe, compiled=False)
        fields = {**recipe_model(plan.train_model, recipe), "n_layer": 2}
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


PROBE_ROWS = 4  # rows of the first batch the untrained model's start is checked on
# How far the run's start may be from the expected one (nats): the run computes it on its
# device in its precision, the expectation in fp32 on CPU. At the GPU size, bf16 autocast on
# CPU moved it by 0.0002 (GPT-2's recipe) and 0.0026 (the modern one's, whose input-token
# logits near 7 round in steps of 1/32); 0.1 leaves room for CUDA's kernels. A model that is
# not the untrained one (other weights, or a forward gone wrong) misses by more.
START_TOLERANCE = 0.1


def curve_fields(plan: Plan, recipe: str) -> dict[str, Any]:
    """The loss-curve model's ModelConfig fields for one recipe."""
    L, H, C = plan.curve_model
    return recipe_model(dict(vocab_size=plan.curve_vocab, block_size=plan.curve_seq, n_layer=L,
                             n_head=H, n_embd=C, dropout=0.0, bias=False), recipe)


def curve_data(plan: Plan) -> torch.Tensor:
    """(steps, B, T + 1) int64: every step's batch, the same for both recipes."""
    steps, B, T = plan.curve_steps, plan.curve_batch, plan.curve_seq
    return structured_tokens(steps * B, T, plan.curve_vocab, NOISE, seed=1).view(steps, B, T + 1)


def untrained_curve_model(plan: Plan, recipe: str) -> GPT:
    """The loss-curve model as the run starts it: seeded, initialised on CPU (the run then
    moves it to its device)."""
    torch.manual_seed(0)
    return GPT(ModelConfig(**curve_fields(plan, recipe)))


def probe_loss(model: GPT, batch: torch.Tensor, bf16: bool) -> float:
    """Mean next-token loss of `model` on `batch` ((B, T + 1) int64), without gradients, on
    the model's device, under bf16 autocast where `bf16` says."""
    device = next(model.parameters()).device
    x, y = batch[:, :-1].to(device), batch[:, 1:].to(device)
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
        return lm_loss(model(x), y).item()


def expected_first_loss(plan: Plan, recipe: str, data: torch.Tensor | None = None) -> float:
    """What the run's untrained model scores on the first PROBE_ROWS rows of its first batch,
    computed in fp32 on CPU: the same seed, initialisation and data as the run (`data`:
    `curve_data(plan)`, made here when not given)."""
    data = curve_data(plan) if data is None else data
    return probe_loss(untrained_curve_model(plan, recipe), data[0, :PROBE_ROWS], bf16=False)


def start_ok(start: float, expected: float) -> bool:
    """Whether a run's start is the untrained model's: within START_TOLERANCE of expected."""
    return abs(start - expected) <= START_TOLERANCE


def train_curve(plan: Plan, recipe: str) -> dict[str, Any]:
    """Train the loss-curve model of `recipe` for the plan's steps; its start, its curve and
    whether both are as they should be (`passed`, and `why` where not)."""
    device = torch.device(plan.device)
    V, steps, lr = plan.curve_vocab, plan.curve_steps, plan.curve_lr
    train = dict(learning_rate=lr, min_lr=lr / 10, warmup_iters=steps // 10, weight_decay=0.1,
                 **(MODERN_TRAIN if recipe == "modern" else {}))
    data = curve_data(plan)
    expected = expected_first_loss(plan, recipe, data)
    model = untrained_curve_model(plan, recipe).to(device)
    start_loss = probe_loss(model, data[0, :PROBE_ROWS], plan.dtype == "bfloat16")
    optim: OptimConfig = TrainConfig().replace(**train).optim
    optimizer = make_optimizer(model, optim, device)
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
    # Passed: it started as the untrained model, learned the rule to within the margin, and
    # did not beat the floor (by 0.1 nats: over 3 standard errors of a 10-step mean here).
    why = [*([f"start {start_loss:.4f} is not the untrained model's {expected:.4f} (within "
              f"{START_TOLERANCE})"] if not start_ok(start_loss, expected) else []),
           *([f"loss {curve[0]:.4f} -> {final:.4f}, not between the floor {floor:.4f} (less "
              f"0.1) and {threshold:.4f}"] if not floor - 0.1 < final < threshold else [])]
    return {"recipe": recipe, "start_loss": round(start_loss, 4),
            "expected_start_loss": round(expected, 4), "start_tolerance": START_TOLERANCE,
            "first_loss": round(curve[0], 4), "final_loss": round(final, 4),
            "floor": round(floor, 4), "threshold": round(threshold, 4), "passed": not why,
            **({"why": "; ".join(why)} if why else {}),
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


# The skip reason of tests that only a machine without a CUDA GPU can run (a CLI error that
# says there is none): on a GPU machine that skip is right, not a failure.
GPU_PRESENT = "a CUDA GPU is present"
CUDA_TESTS = ["tests/unit", "tests/integration", "-m", "cuda and not slow"]  # marker `cuda`


def cuda_tests_command(junit_xml: Path) -> list[str]:
    """The pytest command of cuda_tests: the tests marked `cuda` (pyproject's markers), chosen
    by marker, not by a name pattern that also matches tests that merely mention CUDA."""
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CUDA_TESTS,
            f"--junitxml={junit_xml}"]


def junit_counts(path: Path) -> dict[str, Any]:
    """passed / failed / skipped / skipped_gpu_present / errors and each test's outcome, from
    pytest's JUnit XML (a skip's reason is its `message`)."""
    counts: dict[str, Any] = {"passed": 0, "failed": 0, "skipped": 0, "skipped_gpu_present": 0,
                              "errors": 0, "tests": {}}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        skip = case.find("skipped")
        outcome = ("failed" if "failure" in kinds else "errors" if "error" in kinds
                   else "passed" if skip is None
                   else "skipped_gpu_present" if GPU_PRESENT in skip.get("message", "")
                   else "skipped")
        counts[outcome] += 1
        counts["tests"][f"{case.get('classname')}::{case.get('name')}"] = outcome
    return counts


def pytest_problems(p: dict[str, Any]) -> list[str]:
    """What is wrong with a cuda_tests pytest run (`junit_counts` plus `error`): a test
    failed, a GPU test skipped on the GPU, or none passed. A skip because a CUDA GPU is
    present is no problem."""
    if "error" in p:
        return [f"pytest: {p['error']}"]
    return [*([f"{p['failed'] + p['errors']} tests failed"] if p["failed"] + p["errors"] else []),
            *([f"{p['skipped']} CUDA tests skipped on a CUDA machine"] if p["skipped"] else []),
            *(["no CUDA test passed"] if not p["passed"] else [])]


def run_cuda_pytest(tmp: str, limit: float) -> dict[str, Any]:
    """The tests marked `cuda`, counted (`junit_counts`), with `error` where pytest did not
    finish its run."""
    xml = Path(tmp) / "junit.xml"
    cmd = cuda_tests_command(xml)
    rc, out, err, seconds = run_limited(cmd, limit)
    result = {"command": shlex.join(["python", *cmd[1:-1]]), "seconds": round(seconds, 1),
              "rc": rc, **(junit_counts(xml) if xml.exists() else {})}
    if rc not in (0, 1) or not xml.exists():  # 1: some failed (counted); 5: none chosen
        result["error"] = failure(rc, out + err, limit)
    return result


def cuda_train_command(out: Path) -> list[str]:
    """The trainer end to end on the GPU, as the README's CUDA example runs it: 40 steps of
    the shakespeare-char preset on the fixture plays, a checkpoint written to `out`."""
    return [sys.executable, "-m", "gptscratch", "train", "--preset", "shakespeare-char",
            "--data", "tests/fixtures/plays.txt", "--out", str(out), "--device", "cuda",
            "--max-iters", "40", "--eval-interval", "20", "--eval-iters", "2", "--max-time",
            "0", "--sample-tokens", "20"]


def run_cuda_train(tmp: str, limit: float) -> dict[str, Any]:
    """`cuda_train_command` run, with `error` where it failed or saved no checkpoint."""
    run = Path(tmp) / "run"
    cmd = cuda_train_command(run)
    env = {**os.environ, "GPTSCRATCH_CACHE": str(Path(tmp) / "cache")}
    rc, out, err, seconds = run_limited(cmd, limit, env)
    saved = (run / "latest").is_dir()
    result = {"command": shlex.join(["gptscratch", *cmd[3:]]).replace(tmp, "TMP"),
              "seconds": round(seconds, 1), "rc": rc, "checkpoint_saved": saved}
    if rc != 0 or not saved:
        result["error"] = failure(rc, err, limit)
    return result


def part_cuda_tests(plan: Plan, budget: Budget) -> dict[str, Any]:
    if plan.device != "cuda":
        return {"status": "skipped: no CUDA"}
    part: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in (("pytest", run_cuda_pytest), ("cli_train", run_cuda_train)):
            limit = budget.left(f"cuda_tests:{name}")
            part[name] = (run(tmp, limit) if limit >= Budget.MIN_START_S
                          else {"error": "not run, the time budget was spent"})
    problems = [*pytest_problems(part["pytest"]),
                *([f"cli_train: {part['cli_train']['error']}"] if "error" in part["cli_train"]
                  else [])]
    return {"status": "failed: " + "; ".join(problems) if problems else "ok", **part}


def part_throughput(plan: Plan, smoke: bool, budget: Budget) -> dict[str, Any]:
    device = torch.device(plan.device)
    part: dict[str, Any] = {"rows": []}
    problems: list[str] = []
    peak = 0.0
    try:
        dtype = torch.bfloat16 if plan.dtype == "bfloat16" else torch.float32
        peak, part["peak_source"] = peak_flops(device, dtype)
        part["peak_tflops"] = round(peak / 1e12, 3)
    except Exception as e:  # MFU is then missing; tokens/s still counts
        part["peak_error"] = f"{type(e).__name__}: {e}"
    part["flash"] = "skipped: no CUDA"
    if device.type == "cuda" and budget.left("throughput:flash") < Budget.MIN_START_S:
        part["flash"] = "not run: the time budget was spent"
        problems.append("flash probe: not run (time budget)")
    elif device.type == "cuda":
        part["flash"], error, _ = run_child("flash", smoke, budget.left("throughput:flash"))
        problems += [f"flash probe: {error}"] if error else []
        problems += [f"{r['model']}: no flash kernel" for r in part["flash"]
                     if not r["flash"] and r["model"].startswith("ours")]
    has_hf = importlib.util.find_spec("transformers") is not None
    for row in rows_for(plan):
        left = budget.left(f"throughput:{row.label}")
        info = {"row": row.label, "impl": row.impl, "recipe": row.recipe,
                "compiled": row.compiled}
        if row.impl == "hf" and not has_hf:
            part["rows"].append({**info, "status": "skipped: transformers not installed"})
            continue
        if left < Budget.MIN_START_S:
            part["rows"].append({**info, "status": "failed: not run, the time budget was spent"})
            problems.append(f"{row.label}: not run (time budget)")
            continue
        results, error, seconds = run_child(f"row:{row.label}", smoke, left)
        r = {**info, **(results[0] if results else {}), "process_s": seconds}
        r["status"] = "ok" if error is None and results else f"failed: {error or 'no result'}"
        if "tokens_per_s" in r:  # None where unknown: no peak, or one too low (above 100 %)
            mfu = model_flops_utilisation(r["tokens_per_s"], r["flops_per_token"], peak,
                                          part.get("peak_source", ""))
            r["mfu"] = None if mfu is None else round(mfu, 4)
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


def part_from_child(name: str, key: str, smoke: bool, budget: Budget,
                    expected: list[Any]) -> dict[str, Any]:
    """A part that is one child: its results keyed by `key`, each expected one present, none
    saying it did not pass (its `why`)."""
    limit = budget.left(name)
    if limit < Budget.MIN_START_S:
        return {"status": "failed: not run, the time budget was spent"}
    results, error, _ = run_child(name, smoke, limit)
    found = {r[key]: r for r in results}
    problems = [*([error] if error else []),
                *(f"no result for {key} {k}" for k in expected if k not in found),
                *(f"{key} {r[key]}: {r.get('why', 'did not pass')}"
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
        add("cuda_tests", f"pytest -m '{CUDA_TESTS[-1]}'",
            f"{p.get('passed', 0)} passed, {p.get('failed', 0)} failed, {p.get('skipped', 0)} "
            f"skipped, {p.get('skipped_gpu_present', 0)} skipped as they should be on a GPU, "
            f"{p.get('errors', 0)} errors ({p.get('seconds', '-')} s)", p.get("error", ""))
        c = tests["cli_train"]
        add("cuda_tests", "gptscratch train --device cuda", f"exit {c.get('rc')}, checkpoint "
            f"{'saved' if c.get('checkpoint_saved') else 'missing'} ({c.get('seconds', '-')} s)",
            c.get("error", "ok"))
    add("cuda_tests", "part", "", tests["status"])
    t = parts["throughput"]
    for f in t.get("flash", []) if isinstance(t.get("flash"), list) else []:
        add("throughput", f"flash SDPA: {f['model']}", "flash kernel" if f["flash"]
            else f"no flash: {f['why']}")
    for r in t.get("rows", []):
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "unknown"
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
        add("loss_curves", r["recipe"], f"start {r['start_loss']} (untrained: "
            f"{r['expected_start_loss']} +- {r['start_tolerance']}), {r['first_loss']} -> "
            f"{r['final_loss']} in {r['steps']} steps (floor {r['floor']}, threshold "
            f"{r['threshold']}, {r['seconds']} s)", r.get("why", "ok"))
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


def run_parts(plan: Plan, smoke: bool, budget: Budget) -> dict[str, dict[str, Any]]:
    """Every part, in the order of `schedule`: the cheap ones first, then throughput."""
    steps = {
        "cuda_tests": lambda: part_cuda_tests(plan, budget),
        "loss_curves": lambda: part_from_child("loss_curves", "recipe", smoke, budget,
                                               ["gpt2", "modern"]),
        "generation": lambda: part_from_child("generation", "batch", smoke, budget, [1, 16]),
        "throughput": lambda: part_throughput(plan, smoke, budget),
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


def count_params(fields: dict[str, Any]) -> int:
    """Our model's parameters for these ModelConfig fields, counted on the meta device (no
    memory, no initialisation)."""
    return gpt_count_params(ModelConfig(**fields), non_embedding=False)


def describe(plan: Plan) -> str:
    """--plan: every step in the order it runs, with its reserved seconds and its shapes, and
    each loss curve's expected first loss (an fp32 forward on CPU: no GPU needed)."""
    amp = "bf16 autocast" if plan.dtype == "bfloat16" else "fp32"
    L, H, C = plan.curve_model
    data = curve_data(plan)
    curves = [f"{recipe} {expected_first_loss(plan, recipe, data):.4f} +- {START_TOLERANCE} "
              f"({count_params(curve_fields(plan, recipe)):,} parameters)"
              for recipe in ("gpt2", "modern")]
    floor = loss_floor(plan.curve_vocab, NOISE)
    what = {
        "cuda_tests:pytest": shlex.join(["python", *cuda_tests_command(Path("x"))[1:-1]]),
        "cuda_tests:cli_train": shlex.join(["gptscratch", *cuda_train_command(Path("TMP"))[3:]]),
        "loss_curves": f"{L} layers, {H} heads, {C} wide, V {plan.curve_vocab}, T "
                       f"{plan.curve_seq}, batch {plan.curve_batch}, {plan.curve_steps} steps, "
                       f"{amp}, eager; first loss (untrained, on the first {PROBE_ROWS} rows "
                       f"of the first batch; ln V is {math.log(plan.curve_vocab):.4f}): "
                       + ", ".join(curves) + f"; floor {floor:.4f}, the last 10 steps' mean "
                       f"must end below {floor + plan.curve_margin:.4f}",
        "generation": f"benchmarks/generation.py's {plan.gen_shape!r} shape, random weights "
                      f"in {'bf16' if plan.dtype == 'bfloat16' else 'fp32'}, batch 1 and 16, "
                      f"{plan.gen_tokens} new tokens with the KV cache",
        "throughput:flash": "a flash-only SDPA forward and backward of 2 layers of each model",
    }
    m = plan.train_model
    for row in rows_for(plan):
        size = ("Hugging Face's GPT2LMHeadModel of the same shape" if row.impl == "hf" else
                f"{count_params(recipe_model(m, row.recipe)):,} parameters")
        what[f"throughput:{row.label}"] = (
            f"{m['n_layer']} layers, {m['n_head']} heads, {m['n_embd']} wide, V "
            f"{m['vocab_size']}, batch {plan.train_batch} x {plan.train_seq}, "
            f"{plan.train_warmup} + {plan.train_steps} timed steps, {amp}, "
            f"{'torch.compile (cold)' if row.compiled else 'eager'}; {size}")
    steps = schedule(plan)
    lines = [f"gpu_check plan ({plan.device}): {sum(s for _, s in steps):.0f} s reserved in "
             "all; a step may also use what the steps before it left unused", "",
             "| step | reserved | what |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:.0f} s | {what[name]} |"
              for name, seconds in steps]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="the same logic on CPU at tiny sizes (fp32, no compile), < 1 min")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON to write (default {RESULTS.relative_to(REPO)}; with "
                             "--cpu-smoke a file in the temporary folder)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for every step together; each step's reserve is scaled "
                             "alike (default: the plan's reserves, which --plan prints)")
    parser.add_argument("--plan", action="store_true",
                        help="print the steps, their shapes and reserved seconds, and the "
                             "loss curves' expected first losses; run nothing (no GPU needed)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    plan = SMOKE if args.cpu_smoke else GPU
    if args.plan:
        print(describe(plan))
        return 0
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
        "machine": machine_info(),
        "sizes": {k: v for k, v in vars(plan).items() if k != "budgets"}}
    budget = Budget(schedule(plan), args.budget)
    report["budget_s"] = round(budget.total, 1)
    report["reserved_s"] = {k: round(v, 1) for k, v in budget.reserved.items()}
    report["parts"] = run_parts(plan, args.cpu_smoke, budget)
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
