"""Muon (`training/muon.py`): Newton-Schulz against an SVD oracle, one step against the update
rule written out, its AdamW groups against `torch.optim.AdamW`, which parameters it takes,
the schedule, the state a checkpoint holds and the memory check's count of it, and the
flags' errors.

The runs (exact resume, a tiny model learning through the CLI) are in
`integration/test_training.py`; 2-process DDP and FSDP in `slow/test_distributed_runs.py`.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, cli_error

from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT
from gptscratch.model.lora import add_lora
from gptscratch.training.config import FinetuneConfig, OptimConfig, TrainConfig
from gptscratch.training.memory import block_matrix_count, estimate_training_memory
from gptscratch.training.muon import (
    NS_COEFFICIENTS,
    MuonWithAdamW,
    newton_schulz,
    newton_schulz_dtype,
)
from gptscratch.training.optimizer import (
    freeze_parameters,
    is_muon_weight,
    lr_at,
    make_optimizer,
)

CPU = torch.device("cpu")


def ns_oracle(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """What the Newton-Schulz iteration does, written through an SVD (float64): the singular
    vectors are kept and each singular value s / ||g||_F goes through the quintic `steps`
    times."""
    a, b, c = NS_COEFFICIENTS
    u, s, vh = torch.linalg.svd(g.double(), full_matrices=False)
    s = s / g.double().norm()
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return u @ torch.diag(s) @ vh


@pytest.mark.parametrize("shape", [(48, 48), (32, 96), (96, 32)])
def test_newton_schulz_is_near_orthogonal_and_matches_the_svd_oracle(
        shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    g = torch.randn(*shape)
    out = newton_schulz(g)
    assert out.shape == g.shape and out.dtype == torch.float32  # fp32 on the CPU
    torch.testing.assert_close(out.double(), ns_oracle(g), atol=2e-5, rtol=0)
    # The quintic with these coefficients does not reach 1: five steps map every normalised
    # singular value in [0.003, 1] into [0.6818, 1.2024] (iterating the scalar polynomial
    # shows it). These random matrices have none smaller, so all land in the band.
    assert (torch.linalg.svdvals(g) / g.norm()).min() > 3e-3
    sv = torch.linalg.svdvals(out)
    assert 0.68 <= sv.min() and sv.max() <= 1.21
    assert sv.max() - sv.min() < 0.55  # and the spread is what the band allows, not more
    # bf16, as it runs on a GPU: an 8-bit mantissa widens the band a little (measured
    # [0.678, 1.193] here).
    sv16 = torch.linalg.svdvals(newton_schulz(g, dtype=torch.bfloat16).float())
    assert 0.65 <= sv16.min() and sv16.max() <= 1.25


def test_newton_schulz_precision_by_device_and_a_zero_gradient_stays_zero() -> None:
    assert newton_schulz_dtype(torch.device("cuda")) == torch.bfloat16
    assert newton_schulz_dtype(CPU) == torch.float32
    assert torch.equal(newton_schulz(torch.zeros(4, 6)), torch.zeros(4, 6))
    # Scale does not matter: the iteration starts from g / ||g||_F.
    g = torch.randn(6, 4)
    torch.testing.assert_close(newton_schulz(1e3 * g), newton_schulz(g), atol=1e-6, rtol=0)


def test_two_muon_steps_follow_the_written_out_rule() -> None:
    """Momentum, Nesterov, Newton-Schulz, the shape factor, the rate and weight decay, by
    hand in float64, for a tall (5 x 3) and a wide (2 x 4) matrix."""
    torch.manual_seed(1)
    tall, wide = torch.randn(5, 3), torch.randn(2, 4)
    params = [torch.nn.Parameter(tall.clone()), torch.nn.Parameter(wide.clone())]
    grads = [[torch.randn(5, 3), torch.randn(2, 4)] for _ in range(2)]
    lr, lr_scale, beta, decay = 0.1, 0.5, 0.9, 0.2
    opt = MuonWithAdamW([{"params": params, "muon": True, "weight_decay": decay}],
                        lr=lr, lr_scale=lr_scale, momentum=beta)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()

    rate = lr * lr_scale
    for i, start in enumerate((tall, wide)):
        p, buf = start.double(), torch.zeros_like(start, dtype=torch.float64)
        for step_grads in grads:
            g = step_grads[i].double()
            buf = beta * buf + (1 - beta) * g
            nesterov = (1 - beta) * g + beta * buf
            rows, cols = p.shape
            p = p * (1 - rate * decay) - rate * max(1, rows / cols) ** 0.5 * ns_oracle(nesterov)
        torch.testing.assert_close(params[i].data.double(), p, atol=1e-5, rtol=0)
        torch.testing.assert_close(opt.state[params[i]]["momentum_buffer"].double(), buf)


def test_the_adamw_groups_follow_torch_adamw() -> None:
    torch.manual_seed(2)
    start = [torch.randn(4, 3), torch.randn(7)]

    def params() -> list[torch.nn.Parameter]:
        return [torch.nn.Parameter(t.clone()) for t in start]

    ours, ref = params(), params()
    groups = lambda ps: [{"params": ps[:1], "weight_decay": 0.1},  # noqa: E731
                         {"params": ps[1:], "weight_decay": 0.0}]
    opt = MuonWithAdamW(groups(ours), lr=3e-3, betas=(0.9, 0.95))
    oracle = torch.optim.AdamW(groups(ref), lr=3e-3, betas=(0.9, 0.95), foreach=False)
    for _ in range(5):
        grads = [torch.randn_like(t) for t in start]
        for ps in (ours, ref):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g.clone()
        opt.step()
        oracle.step()
    for a, b, before in zip(ours, ref, start, strict=True):
        torch.testing.assert_close(a.data, b.data, atol=1e-6, rtol=0)
        assert not torch.allclose(a.data, before, atol=1e-3)  # they did move
    assert opt.state[ours[0]].keys() == oracle.state[ref[0]].keys()  # the same names


def _groups(model: torch.nn.Module, config: OptimConfig) -> tuple[set[str], set[str], list[str]]:
    """(Muon's parameter names, AdamW's, every name in the optimizer in order)."""
    opt = make_optimizer(model, config, CPU)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = [names[id(p)] for g in opt.param_groups if g.get("muon") for p in g["params"]]
    adamw = [names[id(p)] for g in opt.param_groups if not g.get("muon") for p in g["params"]]
    return set(muon), set(adamw), muon + adamw


def test_muon_takes_the_block_matrices_and_adamw_the_rest() -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=20, **{**TINY_MODEL, "n_layer": 3},
                            tie_embeddings=False))
    freeze_parameters(model, FinetuneConfig(freeze_layers=1))
    muon, adamw, every = _groups(model, OptimConfig(optimizer="muon"))
    expected = {f"transformer.h.{i}.{m}.weight" for i in (1, 2)
                for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert muon == expected
    assert {"transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight",
            "transformer.ln_f.weight", "transformer.h.1.ln_1.bias",
            "transformer.h.2.attn.c_attn.bias"} <= adamw
    assert all(model.get_parameter(n).dim() == 1 or not n.startswith("transformer.h.")
               for n in adamw)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(every) == sorted(trainable)  # each trainable parameter exactly once
    assert not any(n.startswith("transformer.h.0.") for n in every)  # frozen: in none
    # AdamW alone keeps today's two groups, all of the same parameters.
    _, only_adamw, every_adamw = _groups(model, OptimConfig())
    assert only_adamw == set(trainable) and len(every_adamw) == len(trainable)


def test_lora_adapters_and_a_tied_head_stay_with_adamw() -> None:
    model = GPT(ModelConfig(vocab_size=20, **TINY_MODEL))
    add_lora(model, rank=2, alpha=4.0, targets=("attn", "mlp"))
    muon, adamw, every = _groups(model, OptimConfig(optimizer="muon"))
    assert not muon and adamw and all(n.endswith(("lora_A", "lora_B")) for n in adamw)
    tied = GPT(ModelConfig(vocab_size=20, **TINY_MODEL))
    muon, adamw, every = _groups(tied, OptimConfig(optimizer="muon"))
    assert "transformer.wte.weight" in adamw and "lm_head.weight" not in every  # one matrix
    assert len(muon) == 4 * TINY_MODEL["n_layer"]


def test_the_schedule_scales_the_muon_rate() -> None:
    """The loop sets every group's `lr` to the schedule's rate (`loop.train_step`); a Muon
    matrix then moves by muon_lr * (that rate / learning_rate) times its orthogonalised
    gradient. Momentum and decay off, so one step's move is exactly that."""
    config = OptimConfig(optimizer="muon", learning_rate=1e-3, min_lr=1e-4, warmup_iters=4,
                         muon_lr=0.05, muon_momentum=0.0, weight_decay=0.0)
    model = GPT(ModelConfig(vocab_size=20, **TINY_MODEL))
    opt = make_optimizer(model, config, CPU)
    weight = model.transformer.h[0].mlp.c_fc.weight  # (4C, C): scaled by sqrt(4) = 2
    for step, progress in ((0, 0.0), (3, 0.04), (50, 0.5), (99, 1.0)):
        lr = lr_at(step, config.learning_rate, config.min_lr, config.warmup_iters, progress)
        for group in opt.param_groups:
            group["lr"] = lr
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        before, ortho = weight.detach().clone(), newton_schulz(weight.grad)
        opt.step()
        expected = config.muon_lr * lr / config.learning_rate * 2.0 * ortho
        torch.testing.assert_close(before - weight.detach(), expected, rtol=1e-3, atol=1e-8)
    assert lr == pytest.approx(1e-4)  # the floor: Muon's is then muon_lr / 10


def test_state_dict_round_trip_continues_identically() -> None:
    def fresh() -> tuple[GPT, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = GPT(ModelConfig(vocab_size=20, **TINY_MODEL))
        return model, make_optimizer(model, OptimConfig(optimizer="muon"), CPU)

    def step(model: GPT, opt: torch.optim.Optimizer, seed: int) -> None:
        torch.manual_seed(seed)
        model(torch.randint(0, 20, (2, 8))).logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()

    model, opt = fresh()
    step(model, opt, 1)
    saved = copy.deepcopy(opt.state_dict())  # as a checkpoint holds it: not the live tensors
    assert {k for st in saved["state"].values() for k in st} == {
        "momentum_buffer", "step", "exp_avg", "exp_avg_sq"}
    other, other_opt = fresh()
    other.load_state_dict(model.state_dict())
    other_opt.load_state_dict(saved)
    step(model, opt, 2)
    step(other, other_opt, 2)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters(),
                                                 strict=True))


@pytest.mark.parametrize("activation", ["gelu_tanh", "swiglu"])
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_the_memory_estimate_counts_the_state_the_optimizer_keeps(optimizer: str,
                                                                  activation: str) -> None:
    """The run's memory check (`training/memory.py`) against the tensors the optimizer really
    holds after a step: AdamW's two moments, or Muon's one buffer for the block matrices."""
    config = ModelConfig(vocab_size=20, **TINY_MODEL, activation=activation)
    model = GPT(config)
    opt = make_optimizer(model, OptimConfig(optimizer=optimizer), CPU)
    model(torch.randint(0, 20, (2, 8))).logsumexp(-1).mean().backward()
    opt.step()
    held = sum(t.nbytes for st in opt.state.values() for k, t in st.items() if k != "step")
    train = TrainConfig().replace(optimizer=optimizer)
    assert estimate_training_memory(config, train).optimizer == held
    muon_params = sum(p.numel() for n, p in model.named_parameters() if is_muon_weight(n, p))
    assert block_matrix_count(config) == muon_params


@pytest.mark.parametrize(("flags", "expected"), [
    (["--optimizer", "sgd"], "optimizer ('sgd') must be one of adamw, muon; try --optimizer"),
    (["--optimizer", "moun"], "must be one of adamw, muon (did you mean muon?); try"),
    (["--optimizer", "muon", "--muon-lr", "0"], "muon_lr (0.0) must be > 0; try --muon-lr"),
    (["--muon-lr", "nan"], "muon_lr (nan) must be > 0"),
    (["--muon-momentum", "1"], "muon_momentum (1.0) must be in [0, 1); try --muon-momentum"),
    (["--muon-momentum", "-0.5"], "muon_momentum (-0.5) must be in [0, 1)"),
])
def test_bad_muon_flags_are_one_line_errors(flags: list[str], expected: str, tmp_path: Path,
                                           tiny_corpus: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    line = cli_error(["train", "--data", str(tiny_corpus), "--out", str(tmp_path / "o"),
                      "--max-iters", "2", *flags], capsys)
    assert expected in line
    assert not (tmp_path / "o").exists()


def test_resuming_with_the_other_optimizer_is_a_one_line_error(
        tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    line = cli_error(["train", "--out", str(run), "--resume", "--max-iters", "22",
                      "--optimizer", "muon"], capsys)
    assert "trained with --optimizer adamw, not muon; resume with --optimizer adamw" in line
