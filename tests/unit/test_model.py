"""The GPT against oracles: torch's GELU, the fused attention kernel, causality, init loss."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from gptscratch.errors import UserError
from gptscratch.model.attention import CausalSelfAttention, explicit_attention
from gptscratch.model.config import ModelConfig
from gptscratch.model.fast import choose_attention_path
from gptscratch.model.gpt import GPT, lm_loss
from gptscratch.model.layers import GELU, gelu, gelu_exact


def tiny(**kw: object) -> ModelConfig:
    base: dict[str, object] = dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32)
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


def test_gelu_matches_torch_tanh_gelu() -> None:
    x = torch.linspace(-8, 8, 10001, dtype=torch.float64)
    assert torch.allclose(gelu(x), F.gelu(x, approximate="tanh"), atol=1e-12)


@pytest.mark.parametrize(("approximate", "reference"), [("tanh", gelu), ("none", gelu_exact)])
def test_gelu_module_runs_the_reference_formula_forward_and_backward(
        approximate: str, reference: Callable[[torch.Tensor], torch.Tensor]) -> None:
    # The model runs the fused kernel (GELU); our written-out formulas are the reference.
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    GELU(approximate)(x).sum().backward()
    reference(x_ref).sum().backward()
    assert torch.allclose(GELU(approximate)(x), reference(x_ref), atol=1e-12)
    assert x.grad is not None and x_ref.grad is not None
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-10)


def test_activation_picks_the_mlp_gelu() -> None:
    cfg = tiny()
    assert GPT(cfg).transformer.h[0].mlp.gelu.approximate == "tanh"  # GPT-2's, the default
    exact = dataclasses.replace(cfg, activation="gelu")
    assert GPT(exact).transformer.h[0].mlp.gelu.approximate == "none"
    with pytest.raises(UserError, match="activation"):
        dataclasses.replace(cfg, activation="relu")
    # A checkpoint config from before the field existed is GPT-2 style.
    old = {k: v for k, v in cfg.to_dict().items() if k != "activation"}
    assert ModelConfig.from_dict(old).activation == "gelu_tanh"


@pytest.mark.parametrize("bias", [True, False])
def test_attention_paths_agree(bias: bool) -> None:
    torch.manual_seed(0)
    attn = CausalSelfAttention(tiny(bias=bias, attention="sdpa")).eval()
    x = torch.randn(3, 16, 32)
    fused = attn(x)
    attn.path = "explicit"
    explicit = attn(x)
    trace: dict[str, torch.Tensor] = {}
    with_weights = attn(x, trace=trace)  # a traced forward takes the explicit path
    att = trace["weights"]
    assert torch.allclose(fused, explicit, atol=1e-6)
    assert torch.equal(explicit, with_weights)
    assert att.shape == (3, 4, 16, 16)
    assert torch.allclose(att.sum(-1), torch.ones(3, 4, 16), atol=1e-6)
    assert torch.all(att.triu(diagonal=1) == 0)


def test_explicit_attention_matches_sdpa_directly() -> None:
    q, k, v = torch.randn(3, 2, 4, 7, 8).unbind(0)
    y, _ = explicit_attention(q, k, v)
    assert torch.allclose(y, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)


def test_auto_path_under_cpu_bf16_autocast_matches_sdpa() -> None:
    """"auto" on a CPU under bf16 autocast resolves to the explicit path, which gives SDPA's
    output to within bf16's rounding: 3.9e-3 at most over 50 seeds here (one bf16 step at the
    outputs' size, ~1.5), so 8e-3 leaves a 2x margin."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(tiny(attention="auto")).eval()
    choose_attention_path(attn, torch.device("cpu"), torch.bfloat16)
    assert attn.path == "explicit"
    x = torch.randn(2, 16, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = attn(x).float()
        attn.path = "sdpa"
        fused = attn(x).float()
    assert not torch.equal(auto, fused)  # two paths, not one compared with itself
    assert torch.allclose(auto, fused, atol=8e-3, rtol=0)


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_causality_later_tokens_do_not_change_earlier_logits(attention: str) -> None:
    torch.manual_seed(0)
    model = GPT(tiny(attention=attention)).eval()
    idx = torch.randint(0, 50, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 50
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_initial_loss_is_close_to_log_vocab() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(vocab_size=500, n_embd=64))
    idx = torch.randint(0, 500, (4, 16))
    targets = torch.randint(0, 500, (4, 16))
    loss = lm_loss(model(idx), targets).item()
    assert abs(loss - math.log(500)) < 0.1


def test_weights_are_tied_and_init_follows_gpt2() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(n_layer=8, n_embd=256, n_head=4))
    assert model.lm_head.weight is model.transformer.wte.weight
    proj = model.transformer.h[0].attn.c_proj.weight
    assert abs(proj.std().item() - 0.02 / math.sqrt(16)) < 5e-4
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 5e-4
    assert all(p.abs().sum() == 0 for n, p in model.named_parameters() if n.endswith(".bias"))


def test_no_bias_model_has_no_bias_parameters() -> None:
    names = [n for n, _ in GPT(tiny(bias=False)).named_parameters()]
    assert not any(n.endswith("bias") for n in names)


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = GPT(tiny())
    idx = torch.randint(0, 50, (4, 17))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = lm_loss(model(idx[:, :-1]), idx[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.05


def test_sequence_longer_than_block_is_rejected() -> None:
    with pytest.raises(ValueError, match="block_size"):
        GPT(tiny())(torch.zeros(1, 17, dtype=torch.long))


def test_config_errors_name_the_fix() -> None:
    with pytest.raises(UserError, match=r"n_embd \(500\) must be divisible by n_head \(6\); "
                       r"try --n-embd 504"):
        ModelConfig(n_embd=500, n_head=6)
    with pytest.raises(UserError, match="dropout"):
        ModelConfig(dropout=1.5)
    with pytest.raises(UserError, match="n_layer"):
        ModelConfig(n_layer=0)
