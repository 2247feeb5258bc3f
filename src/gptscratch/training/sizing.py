"""Sizing a model to a time budget (`--size auto`): time a few shapes here, then take the one a
stated rule says will reach the lowest loss in the time given.

The rule is the compute-optimal one of the scaling-law papers (Kaplan et al. 2020; Hoffmann et
al. 2022, "Chinchilla"): for a fixed amount of compute, a model too large sees too few tokens
and one too small stops learning, and the best split keeps the tokens seen per parameter near
a constant. Chinchilla's constant is about 20, for runs of hours on a cluster; in minutes on a
CPU the best ratio is far lower, so TOKENS_PER_PARAM is this project's own, read off a sweep of
shapes x budgets (`benchmarks/sizing.py`, `docs/benchmarks.md`).

The shapes form a ladder by depth, nanochat's rule: depth d is d layers, 64 x d wide, d heads
of 64 (`shape_of`). Each rung's training step is timed on this machine (`probe_step_seconds`:
a warm-up step, then timed ones for a second, at least three, on random tokens, with the run's
batch, context, optimizer, precision and device, without torch.compile) and cached per machine
and torch build in the cache folder's `step_times.json`, so a second run starts at once. The
tokens a budget buys at that speed, over the model's parameters, give each rung's ratio;
`choose` takes the rung whose ratio is nearest the rule's (on a log scale). The rungs are
timed from the smallest up and the timing stops once a ratio falls below the rule's, or the
next rung would not fit the free memory: larger ones would only be further off.

Near the boundary between two rungs the choice can go either way with the machine's speed of
the moment (the probes are cached, so it is then fixed): there the two rungs' losses are close,
as the loss is flat around the best size.

The batch, the context and the learning rates stay the preset's (the sweep measured them so).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from gptscratch.files import cached_measurement
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT, count_params, lm_loss
from gptscratch.runtime.device import available_memory, machine_key
from gptscratch.runtime.precision import Precision, choose_precision
from gptscratch.training.config import TrainConfig
from gptscratch.training.memory import estimate_training_memory
from gptscratch.training.optimizer import make_optimizer

log = logging.getLogger("gptscratch.train")

HEAD_DIM = 64  # nanochat's: width = 64 x depth, one head per 64 channels
MAX_DEPTH = 32  # 2048 wide, ~1.6B parameters: past what a --size auto run on one device buys
SHAPE_FIELDS = ("n_layer", "n_embd", "n_head")  # what the ladder sets
# Tokens seen per parameter at the best shape of each budget (60, 150 and 300 s), their
# geometric mean 3.9 rounded, from benchmarks/sizing.py on the 2-core AMD EPYC in fp32
# (benchmarks/results/sizing.json; docs/benchmarks.md, "Sizing a model to its time").
TOKENS_PER_PARAM = 4.0
# The probe's timed steps: at least PROBE_STEPS and PROBE_SECONDS (a small model's steps take
# milliseconds, where one slow step would decide), at most PROBE_MAX_STEPS.
PROBE_WARMUP, PROBE_STEPS, PROBE_SECONDS, PROBE_MAX_STEPS = 1, 3, 1.0, 50
CACHE_FILE = "step_times.json"


def shape_of(depth: int) -> dict[str, Any]:
    """The ladder's shape at `depth`: depth layers, 64 x depth wide, depth heads of 64."""
    return dict(n_layer=depth, n_embd=HEAD_DIM * depth, n_head=depth)


def tokens_per_param(budget_s: float, step_seconds: float, tokens_per_step: int,
                     params: int) -> float:
    """What the rule compares: the tokens `budget_s` buys at `step_seconds` a step, over the
    model's parameters."""
    return budget_s / step_seconds * tokens_per_step / params


@dataclass(frozen=True)
class Choice:
    """The rung taken, and what the rule saw of every rung it timed."""

    depth: int
    budget_s: float
    tokens_per_step: int
    params: dict[int, int]  # by depth, the rungs timed
    step_seconds: dict[int, float]

    def tokens(self, depth: int) -> float:
        """Tokens the budget buys at `depth`'s step time."""
        return self.budget_s / self.step_seconds[depth] * self.tokens_per_step

    def ratio(self, depth: int) -> float:
        return tokens_per_param(self.budget_s, self.step_seconds[depth], self.tokens_per_step,
                                self.params[depth])

    def describe(self) -> str:
        d = self.depth
        return (f"--size auto: {self.budget_s:g} s at {self.step_seconds[d]:.3g} s a step "
                f"buys {self.tokens(d) / 1e6:.2f}M tokens for depth {d} ({d} layers x "
                f"{HEAD_DIM * d} wide, {self.params[d] / 1e6:.2f}M parameters): "
                f"{self.ratio(d):.2g} tokens a parameter, the nearest of the "
                f"{len(self.params)} shapes timed to the rule's {TOKENS_PER_PARAM:g}")

    def table(self) -> list[str]:
        """A line per rung timed, for the log."""
        return [f"  depth {d:>2}: {self.params[d] / 1e6:7.2f}M parameters, "
                f"{self.step_seconds[d]:.3g} s a step, {self.ratio(d):7.3g} tokens a "
                f"parameter{'  <- chosen' if d == self.depth else ''}"
                for d in sorted(self.params)]

    def to_meta(self) -> dict[str, Any]:
        """What a checkpoint keeps of the choice (`extra_meta["sizing"]`)."""
        return {"depth": self.depth, "budget_s": self.budget_s,
                "tokens_per_param_rule": TOKENS_PER_PARAM,
                "step_seconds": {str(d): round(s, 5) for d, s in self.step_seconds.items()},
                "params": {str(d): n for d, n in self.params.items()}}


def choose(budget_s: float, params: Mapping[int, int], step_seconds: Mapping[int, float],
           tokens_per_step: int) -> Choice:
    """The depth whose tokens per parameter in `budget_s` is nearest TOKENS_PER_PARAM on a
    log scale, among the depths timed (`step_seconds`)."""
    def distance(d: int) -> float:
        ratio = tokens_per_param(budget_s, step_seconds[d], tokens_per_step, params[d])
        return abs(math.log(ratio / TOKENS_PER_PARAM))

    best = min(step_seconds, key=lambda d: (distance(d), d))  # ValueError if none was timed
    return Choice(best, budget_s, tokens_per_step, {d: params[d] for d in step_seconds},
                  dict(step_seconds))


def size_model(model_fields: Mapping[str, Any], config: TrainConfig, vocab_size: int,
               device: torch.device, world_size: int = 1,
               probe: Callable[[ModelConfig], float] | None = None) -> Choice:
    """Time the ladder from depth 1 up (cached) and choose, for a run of `config.run.max_time`
    seconds with `model_fields`' other settings. Each rung is timed in the precision the run
    would take at its width (`--dtype auto` may pick bf16 only for wide models). `probe` (a
    ModelConfig's seconds a step) defaults to `probe_step_seconds` through the cache."""
    budget = config.run.max_time
    if not budget:  # the run refuses this first, in one line (training/run.py _check_size)
        raise ValueError("--size auto needs a time budget")
    optim = config.optim
    tokens_per_step = optim.batch_size * optim.grad_accum * world_size * model_fields[
        "block_size"]
    free = available_memory(device)
    params: dict[int, int] = {}
    seconds: dict[int, float] = {}
    started = time.perf_counter()
    for depth in range(1, MAX_DEPTH + 1):
        model_config = ModelConfig(vocab_size=vocab_size, **{**model_fields, **shape_of(depth)})
        precision = choose_precision(config.system.dtype, device, model_config.n_embd)
        estimate = estimate_training_memory(model_config, config, world_size,
                                            low_precision=precision.dtype != torch.float32)
        if seconds and free is not None and estimate.total > free:
            break  # the smallest rung is timed even so: the memory check then says what fits
        params[depth] = count_params(model_config)
        seconds[depth] = (probe(model_config) if probe is not None
                          else cached_step_seconds(model_config, config, device, precision))
        if tokens_per_param(budget, seconds[depth], tokens_per_step,
                            params[depth]) < TOKENS_PER_PARAM:
            break
    choice = choose(budget, params, seconds, tokens_per_step)
    log.info("%s (timing took %.1f s; the step times are cached in %s)", choice.describe(),
             time.perf_counter() - started, CACHE_FILE)
    for line in choice.table():
        log.info(line)
    return choice


def cached_step_seconds(model_config: ModelConfig, config: TrainConfig, device: torch.device,
                        precision: Precision) -> float:
    """`probe_step_seconds`, measured once per machine, torch build and step (shape, batch,
    optimizer, checkpointing) and kept in the cache folder."""
    optim = config.optim
    step = {**model_config.to_dict(), "batch_size": optim.batch_size,
            "grad_accum": optim.grad_accum, "optimizer": optim.optimizer,
            "activation_checkpointing": config.system.activation_checkpointing}
    key = f"{machine_key(device, precision.dtype)}|{json.dumps(step, sort_keys=True)}"
    return cached_measurement(
        CACHE_FILE, key, lambda: probe_step_seconds(model_config, config, device, precision))


def probe_step_seconds(model_config: ModelConfig, config: TrainConfig, device: torch.device,
                       precision: Precision) -> float:
    """Seconds one optimizer step of this shape takes here: the median of the timed steps after
    PROBE_WARMUP (PROBE_STEPS or more, until PROBE_SECONDS have passed), each a forward,
    backward, clip and update on random tokens over grad_accum micro-batches, in `precision`
    (autocast, as training runs it), eager. The global random state is left as it was."""
    optim = config.optim
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = GPT(model_config).to(device)
        model.activation_checkpointing = config.system.activation_checkpointing
        optimizer = make_optimizer(model, optim, device)
        shape = (optim.batch_size, model_config.block_size)
        x = torch.randint(model_config.vocab_size, shape, device=device)
        y = torch.randint(model_config.vocab_size, shape, device=device)
        times: list[float] = []
        for i in range(PROBE_WARMUP + PROBE_MAX_STEPS):
            if len(times) >= PROBE_STEPS and sum(times) >= PROBE_SECONDS:
                break
            start = time.perf_counter()
            for _ in range(optim.grad_accum):
                with precision.autocast():
                    loss = lm_loss(model(x), y)
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= PROBE_WARMUP:
                times.append(time.perf_counter() - start)
    return statistics.median(times)
