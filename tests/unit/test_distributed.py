"""Multi-process training (DDP and FSDP) piece by piece: rank context, backend and device
choice, batch sharding, the evaluation reduction, optimizer state by name.

Real 2-process torchrun runs are in `slow/test_distributed_runs.py`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL

from gptscratch.data.batches import get_batch
from gptscratch.data.packing import PackedRows
from gptscratch.errors import UserError
from gptscratch.evaluation.evaluate import estimate_loss
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT
from gptscratch.training.config import OptimConfig
from gptscratch.training.distributed import (
    DistContext,
    backend_for,
    context_from_env,
    gradient_sync,
    rank_device,
    shard_model,
    wrap_model,
)
from gptscratch.training.optimizer import make_optimizer, parameter_groups, state_by_name
from gptscratch.training.resume import load_optimizer_state


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


def test_muon_state_by_name_loads_like_the_positional_one() -> None:
    """The same for `--optimizer muon`: its third group, of the blocks' matrices, and their
    momentum buffers, keyed by name and loaded back through the FSDP path's loader."""
    def trained() -> tuple[GPT, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = GPT(ModelConfig(vocab_size=20, **TINY_MODEL))
        model.transformer.h[0].requires_grad_(False)
        return model, make_optimizer(model, OptimConfig(optimizer="muon"), torch.device("cpu"))

    model, opt = trained()
    model(torch.randint(0, 20, (2, 8))).sum().backward()
    opt.step()
    named = state_by_name(opt.state_dict(), model)
    assert set(named["state"]["transformer.h.1.mlp.c_fc.weight"]) == {"momentum_buffer"}
    assert set(named["state"]["transformer.wte.weight"]) == {"step", "exp_avg", "exp_avg_sq"}
    assert named["param_groups"][2]["muon"] and named["param_groups"][2]["params"] == [
        f"transformer.h.1.{m}.weight" for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                "mlp.c_proj")]
    fresh_model, fresh = trained()
    load_optimizer_state(fresh_model, fresh, named)
    a, b = opt.state_dict(), fresh.state_dict()
    assert [{**g, "betas": list(g["betas"])} for g in a["param_groups"]] == b["param_groups"]
    assert len(a["param_groups"]) == 3 and a["state"].keys() == b["state"].keys()
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


def packed_rows(tokens: np.ndarray, rows: int = 12, width: int = 33) -> PackedRows:
    """`tokens` as `rows` conversations of a row each, whose answers (the targets) are 3 to
    15 ids long: the ranks' slices of a batch hold different numbers of targets."""
    targets = np.zeros(rows * width, dtype=np.uint8)
    for c in range(rows):
        targets[(c + 1) * width - 3 * (c % 5 + 1):(c + 1) * width] = 1
    return PackedRows(tokens[:rows * width], targets,  # type: ignore[arg-type]
                      np.arange(rows, dtype=np.int64) * width, np.full(rows, width),
                      np.arange(rows), np.arange(rows + 1), width, pad_id=0)


@pytest.mark.parametrize("data", ["text", "conversations"])
def test_sharded_evaluation_reduces_to_the_single_process_loss(data: str) -> None:
    """Two ranks' slices of each batch give one process's loss; for packed conversations the
    global batch's mean over its targets (not the mean of the ranks' means)."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, **TINY_MODEL))
    tokens: Any = np.random.default_rng(0).integers(0, 50, 5000).astype(np.uint16)
    if data == "conversations":
        tokens = packed_rows(tokens)
    kw: dict[str, Any] = dict(block_size=32, iters=3, seed=1, device=torch.device("cpu"))
    single = estimate_loss(model, tokens, batch_size=4, **kw)
    # Two "ranks" in one process: each rank's tensors as its all-reduces get them, then a fake
    # all-reduce that hands back their sums, call by call.
    calls: list[list[torch.Tensor]] = [[], []]
    for rank in range(2):
        estimate_loss(model, tokens, batch_size=2, shard=(rank, 2),
                      sum_across=lambda t, r=rank: calls[r].append(t.clone()), **kw)
    totals = iter([a + b for a, b in zip(*calls, strict=True)])

    def add_all(t: torch.Tensor) -> None:
        t.copy_(next(totals))

    reduced = estimate_loss(model, tokens, batch_size=2, shard=(0, 2), sum_across=add_all, **kw)
    assert reduced == pytest.approx(single, rel=1e-6)
    means = [c[0] / c[1] if data == "conversations" else c[0] for c in calls]
    assert float(means[0].mean()) != pytest.approx(single, rel=1e-4)
    if data == "conversations":  # the mean of the ranks' means is not the batch's mean
        assert float(((means[0] + means[1]) / 2).mean()) != pytest.approx(single, rel=1e-4)


# --- real 2-process runs --------------------------------------------------------------------
