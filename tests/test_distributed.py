"""Multi-process training (DDP and FSDP through torchrun) on CPU with gloo, against the
1-process oracle.

The fast tests check the pieces (rank context, backend and device choice, batch sharding, the
evaluation reduction, optimizer state by name); the slow ones start real 2-process runs with
torchrun and compare their loss sequence, checkpoints and resume against a single process with
the same global batch.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from safetensors import safe_open

from gptscratch import api
from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.data.batches import get_batch
from gptscratch.errors import UserError
from gptscratch.evaluation.evaluate import estimate_loss
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT
from gptscratch.training.distributed import (
    DistContext,
    backend_for,
    context_from_env,
    gradient_sync,
    rank_device,
    shard_model,
    wrap_model,
)
from gptscratch.training.distributed_state import load_optimizer_state
from gptscratch.training.metrics import read_metrics
from gptscratch.training.optimizer import parameter_groups, state_by_name


def test_context_from_torchrun_environment() -> None:
    assert context_from_env({}) == DistContext(0, 0, 1)
    ctx = context_from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (ctx.rank, ctx.local_rank, ctx.world_size) == (3, 1, 4)
    assert ctx.enabled and not ctx.is_main and ctx.shard == (3, 4)
    with pytest.raises(UserError, match="RANK"):
        context_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(UserError, match="integers"):
        context_from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_backend_and_device_per_rank() -> None:
    assert backend_for(torch.device("cuda", 0)) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"
    ctx = DistContext(rank=5, local_rank=1, world_size=8)
    assert rank_device(torch.device("cuda"), ctx) == torch.device("cuda", 1)
    assert rank_device(torch.device("cpu"), ctx) == torch.device("cpu")
    assert rank_device(torch.device("cuda"), DistContext()) == torch.device("cuda")


def test_single_process_needs_no_wrapper_or_sync() -> None:
    model = GPT(ModelConfig(vocab_size=20, **TINY_MODEL))
    assert wrap_model(model, DistContext(), torch.device("cpu")) is model
    with gradient_sync(model, sync=False):  # a plain module: nothing to hold back
        pass


def test_fsdp_needs_torchrun() -> None:
    model = GPT(ModelConfig(vocab_size=20, **TINY_MODEL))
    with pytest.raises(UserError, match="torchrun.*--no-fsdp"):
        shard_model(model, DistContext())


def test_optimizer_state_by_name_loads_like_the_positional_one() -> None:
    """The FSDP checkpoint form (keyed by parameter name) carries the same state."""
    def trained() -> tuple[GPT, torch.optim.AdamW]:
        torch.manual_seed(0)
        model = GPT(ModelConfig(vocab_size=20, **TINY_MODEL))
        model.transformer.h[0].requires_grad_(False)  # frozen parameters are left out
        return model, torch.optim.AdamW(parameter_groups(model, 0.1), lr=0.1)

    model, opt = trained()
    model(torch.randint(0, 20, (2, 8))).sum().backward()
    opt.step()
    named = state_by_name(opt.state_dict(), model)
    assert "transformer.wte.weight" in named["state"] and "lm_head.weight" not in named["state"]
    assert not any(k.startswith("transformer.h.0.") for k in named["state"])
    fresh_model, fresh = trained()
    load_optimizer_state(fresh_model, fresh, named)
    a, b = opt.state_dict(), fresh.state_dict()
    assert [{**g, "betas": list(g["betas"])} for g in a["param_groups"]] == b["param_groups"]
    assert len(a["param_groups"]) == 2 and a["state"].keys() == b["state"].keys()
    for i, st in a["state"].items():
        assert all(torch.equal(st[k], b["state"][i][k]) for k in st)


def test_rank_shards_together_are_the_single_process_batch() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    whole_x, whole_y = get_batch(tokens, 6, 16, torch.Generator().manual_seed(7))
    parts = [get_batch(tokens, 2, 16, torch.Generator().manual_seed(7), shard=(r, 3))
             for r in range(3)]
    assert torch.equal(torch.cat([x for x, _ in parts]), whole_x)
    assert torch.equal(torch.cat([y for _, y in parts]), whole_y)
    assert not torch.equal(parts[0][0], parts[1][0])


def test_sharded_evaluation_reduces_to_the_single_process_loss() -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, **TINY_MODEL))
    tokens = np.random.default_rng(0).integers(0, 50, 5000).astype(np.uint16)
    kw: dict[str, Any] = dict(block_size=32, iters=3, seed=1, device=torch.device("cpu"))
    single = estimate_loss(model, tokens, batch_size=4, **kw)
    # Two "ranks" in one process: a fake all-reduce that adds the other rank's losses.
    per_rank: list[torch.Tensor] = []
    for rank in range(2):
        estimate_loss(model, tokens, batch_size=2, shard=(rank, 2),
                      sum_across=lambda t: per_rank.append(t.clone()), **kw)
    total = per_rank[0] + per_rank[1]

    def add_all(t: torch.Tensor) -> None:
        t.copy_(total)

    reduced = estimate_loss(model, tokens, batch_size=2, shard=(0, 2), sum_across=add_all, **kw)
    assert reduced == pytest.approx(single, rel=1e-6)
    assert float(per_rank[0].mean()) != pytest.approx(single, rel=1e-4)


# --- real 2-process runs --------------------------------------------------------------------

FLAGS = ["--block-size", "32", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
         "--max-iters", "6", "--eval-interval", "3", "--eval-iters", "2", "--log-interval", "1",
         "--warmup-iters", "2", "--max-time", "0", "--dtype", "float32", "--device", "cpu",
         "--grad-accum", "2", "--sample-tokens", "0", "--no-compile"]
OVERRIDES = dict(TINY_MODEL, max_iters=6, eval_interval=3, eval_iters=2, log_interval=1,
                 warmup_iters=2, max_time=0.0, dtype="float32", device="cpu", grad_accum=2,
                 compile=False)


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "gptscratch", "train", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def records(run: Path, key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in read_metrics(run / "metrics.jsonl") if key in r]


@pytest.fixture(scope="module")
def single_and_ddp(tmp_path_factory: pytest.TempPathFactory,
                   tiny_corpus: Path) -> tuple[Path, Path, str]:
    """The same training twice: one process with batch 8, and 2 ranks with batch 4 each."""
    base = tmp_path_factory.mktemp("ddp")
    api.train("shakespeare-char", tiny_corpus, base / "single",
              overrides={**OVERRIDES, "batch_size": 8})
    out = torchrun(2, "--data", str(tiny_corpus), "--out", str(base / "ddp"),
                   "--batch-size", "4", *FLAGS)
    return base / "single", base / "ddp", out.stderr


@pytest.mark.slow
def test_two_ranks_reproduce_the_single_process_run(single_and_ddp: tuple[Path, Path, str]
                                                    ) -> None:
    single, ddp, stderr = single_and_ddp
    losses_1, losses_2 = records(single, "loss"), records(ddp, "loss")
    assert [s for s, _ in losses_2] == list(range(1, 7))
    assert [s for s, _ in losses_1] == [s for s, _ in losses_2]
    assert np.allclose([v for _, v in losses_1], [v for _, v in losses_2], rtol=1e-5, atol=1e-6)
    assert np.allclose([v for _, v in records(single, "val_loss")],
                       [v for _, v in records(ddp, "val_loss")], rtol=1e-5, atol=1e-6)
    # rank 0 alone reports; the global batch is stated.
    assert "2 processes" in stderr and "[rank 1]" not in stderr
    a = load_checkpoint(single, "latest").build_model().state_dict()
    b = load_checkpoint(ddp, "latest").build_model().state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.slow
def test_ddp_checkpoint_has_plain_names_and_loads_in_one_process(
        single_and_ddp: tuple[Path, Path, str]) -> None:
    _, ddp, _ = single_and_ddp
    with safe_open(str(ddp / "latest" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and not [n for n in names if n.startswith(("module.", "_orig_mod."))]
    assert load_checkpoint(ddp, "latest").meta["world_size"] == 2
    text = api.generate(ddp, "\n", max_new_tokens=10, seed=0)
    assert len(text) > 0


@pytest.mark.slow
def test_ddp_resume_is_exact_and_other_world_sizes_are_told(
        single_and_ddp: tuple[Path, Path, str], tmp_path: Path, tiny_corpus: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    _, ddp, _ = single_and_ddp
    split = tmp_path / "split"
    torchrun(2, "--data", str(tiny_corpus), "--out", str(split), "--batch-size", "4", *FLAGS,
             "--stop-at", "3")
    torchrun(2, "--out", str(split), "--resume", "--sample-tokens", "0")
    assert records(split, "loss") == records(ddp, "loss")
    # The same checkpoint continued by one process: it works and says what changes.
    with caplog.at_level(logging.WARNING, logger="gptscratch"):
        result = api.train("shakespeare-char", None, split, resume=True,
                           overrides={"max_iters": 8})
    assert result.step == 8
    assert "trained with 2 process(es) and now has 1" in caplog.text


@pytest.mark.slow
def test_time_budget_stops_all_ranks_at_the_same_step(tmp_path: Path, tiny_corpus: Path) -> None:
    # Ranks follow rank 0's clock: were they to decide alone, one could stop a step early and
    # leave the other waiting in an all-reduce forever (the subprocess timeout would catch it).
    flags = [f for f in FLAGS]
    flags[flags.index("--max-time") + 1] = "4"
    flags[flags.index("--max-iters") + 1] = "100000"
    flags[flags.index("--eval-interval") + 1] = "100000"
    out = torchrun(2, "--data", str(tiny_corpus), "--out", str(tmp_path / "r"),
                   "--batch-size", "4", *flags)
    assert "time budget of 0:00:04 reached" in out.stderr
    meta = load_checkpoint(tmp_path / "r", "latest").meta
    assert 0 < meta["step"] < 100000


# --- FSDP ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    run = tmp_path_factory.mktemp("fsdp") / "fsdp"
    torchrun(2, "--data", str(tiny_corpus), "--out", str(run), "--batch-size", "4", *FLAGS,
             "--fsdp")
    return run


@pytest.mark.slow
def test_fsdp_reproduces_the_single_process_run_and_writes_plain_checkpoints(
        single_and_ddp: tuple[Path, Path, str], fsdp_run: Path) -> None:
    single, _, _ = single_and_ddp
    assert [s for s, _ in records(fsdp_run, "loss")] == list(range(1, 7))
    assert np.allclose([v for _, v in records(single, "loss")],
                       [v for _, v in records(fsdp_run, "loss")], rtol=1e-5, atol=1e-6)
    assert np.allclose([v for _, v in records(single, "val_loss")],
                       [v for _, v in records(fsdp_run, "val_loss")], rtol=1e-5, atol=1e-6)
    # Rank 0 gathered the shards: the same file a single process writes.
    with safe_open(str(fsdp_run / "latest" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    a = load_checkpoint(single, "latest").build_model().state_dict()
    b = load_checkpoint(fsdp_run, "latest").build_model().state_dict()
    assert names and not [n for n in names if n.startswith(("module.", "_orig_mod."))]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    optimizer_state = torch.load(fsdp_run / "latest" / "state.pt", weights_only=False)["optimizer"]
    assert "transformer.h.1.mlp.c_fc.weight" in optimizer_state["state"]


@pytest.mark.slow
def test_fsdp_resume_is_exact_and_moves_between_fsdp_ddp_and_one_process(
        single_and_ddp: tuple[Path, Path, str], fsdp_run: Path, tmp_path: Path,
        tiny_corpus: Path) -> None:
    split = tmp_path / "split"
    torchrun(2, "--data", str(tiny_corpus), "--out", str(split), "--batch-size", "4", *FLAGS,
             "--fsdp", "--stop-at", "3")
    torchrun(2, "--out", str(split), "--resume", "--sample-tokens", "0")  # fsdp is kept
    assert records(split, "loss") == records(fsdp_run, "loss")
    # A DDP checkpoint continues under FSDP exactly as under DDP (optimizer state included).
    _, ddp, _ = single_and_ddp
    for mode in ("ddp", "fsdp"):
        shutil.copytree(ddp, tmp_path / mode)
        torchrun(2, "--out", str(tmp_path / mode), "--resume", "--max-iters", "8",
                 "--sample-tokens", "0", *(["--fsdp"] if mode == "fsdp" else []))
    assert np.allclose([v for _, v in records(tmp_path / "ddp", "loss")],
                       [v for _, v in records(tmp_path / "fsdp", "loss")], rtol=1e-5, atol=1e-6)
    # One process continues an FSDP run when told to drop the sharding.
    with pytest.raises(UserError, match="--no-fsdp"):
        api.train("shakespeare-char", None, split, resume=True, overrides={"max_iters": 8})
    result = api.train("shakespeare-char", None, split, resume=True,
                       overrides={"max_iters": 8, "fsdp": False})
    assert result.step == 8
