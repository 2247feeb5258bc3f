"""LoRA on the GPT (`model/lora.py`), activation checkpointing, and the memory estimate."""

from __future__ import annotations

import pytest
import torch

from gptscratch.checkpoints.adapters import state_hash
from gptscratch.errors import UserError
from gptscratch.model.config import LORA_TARGETS, ModelConfig, parse_targets
from gptscratch.model.fast import FastLinear
from gptscratch.model.gpt import GPT, lm_loss
from gptscratch.model.lora import (
    TARGETS,
    LoRALinear,
    add_lora,
    has_lora,
    lora_state_dict,
    merge_lora,
)
from gptscratch.training.config import TrainConfig
from gptscratch.training.memory import estimate_training_memory, lora_parameter_count

CONFIG = ModelConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
ALL = ("attn", "mlp", "head")


def model_and_ids(seed: int = 0, config: ModelConfig = CONFIG) -> tuple[GPT, torch.Tensor]:
    torch.manual_seed(seed)
    return GPT(config).eval(), torch.randint(0, config.vocab_size, (3, config.block_size))


def randomise_b(model: GPT) -> None:
    """Trained adapters: B is no longer zero."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.1)


def test_lora_linear_computes_the_written_out_formula() -> None:
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    layer = LoRALinear(base, rank=2, alpha=4.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 4, 6)
    W, b, A, B = base.weight, base.bias, layer.lora_A, layer.lora_B
    expected = x @ W.T + b + (4.0 / 2) * (x @ A.T @ B.T)
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.merged_weight(), W + 2.0 * B @ A)


def test_at_init_the_adapted_model_is_exactly_the_base() -> None:
    model, ids = model_and_ids()
    with torch.no_grad():
        before = model(ids)
        names = add_lora(model, rank=4, alpha=8.0, targets=ALL)
        after = model(ids)
    assert torch.equal(before, after)
    assert len(names) == 2 * 4 + 1  # four projections per block, and the head
    assert has_lora(model)


def test_merged_weights_give_the_adapted_models_logits() -> None:
    model, ids = model_and_ids()
    add_lora(model, rank=4, alpha=8.0, targets=ALL)
    randomise_b(model)
    with torch.no_grad():
        adapted = model(ids)
        merge_lora(model)
        merged = model(ids)
    assert not has_lora(model)
    assert (adapted - merged).abs().max().item() < 1e-5
    assert not torch.equal(adapted, model_and_ids()[0](ids))  # the adapters did change it
    # The adapted head was folded into a head of its own; the embedding is untouched.
    assert model.lm_head.weight is not model.transformer.wte.weight
    fresh = model_and_ids()[0]
    torch.testing.assert_close(model.transformer.wte.weight, fresh.transformer.wte.weight)


def test_only_the_adapters_get_gradients() -> None:
    model, ids = model_and_ids()
    add_lora(model, rank=2, alpha=4.0, targets=("attn", "mlp"))
    randomise_b(model)
    model.train()
    lm_loss(model(ids[:, :-1]), ids[:, 1:]).backward()
    for name, p in model.named_parameters():
        if name.endswith(("lora_A", "lora_B")):
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert set(lora_state_dict(model)) == {
        n for n, _ in model.named_parameters() if n.endswith(("lora_A", "lora_B"))}


def test_adapters_keep_the_base_parameter_names() -> None:
    model, _ = model_and_ids()
    base_names = set(model.state_dict())
    add_lora(model, rank=2, alpha=2.0, targets=("attn",))
    names = set(model.state_dict())
    assert base_names <= names
    assert names - base_names == {f"transformer.h.{i}.attn.{layer}.lora_{ab}" for i in range(2)
                                  for layer in ("c_attn", "c_proj") for ab in "AB"}


@pytest.mark.parametrize("rank", [0, 17, -1])
def test_a_rank_out_of_range_is_refused_with_the_range(rank: int) -> None:
    model, _ = model_and_ids()
    with pytest.raises(UserError, match=r"--lora-rank \(.*\) must be a whole number from 1 to 16"):
        add_lora(model, rank=rank, alpha=1.0)


def test_an_unknown_target_lists_the_valid_ones() -> None:
    with pytest.raises(UserError, match="attention is not a LoRA target; choose from attn, "
                                        "mlp, head"):
        parse_targets("attn,attention")
    assert parse_targets("head, attn") == ("attn", "head")
    assert tuple(TARGETS) == LORA_TARGETS  # every name the config accepts adapts something
    with pytest.raises(UserError, match="not a LoRA target"):
        TrainConfig().replace(lora_rank=4, lora_targets="qkv")


def test_activation_checkpointing_gives_the_same_gradients_with_dropout() -> None:
    config = ModelConfig(**{**CONFIG.to_dict(), "dropout": 0.2})
    grads = []
    for checkpointing in (False, True):
        model, ids = model_and_ids(config=config)
        model.train()
        model.activation_checkpointing = checkpointing
        torch.manual_seed(5)
        lm_loss(model(ids[:, :-1]), ids[:, 1:]).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)


def test_a_bf16_frozen_weight_serves_an_fp32_caller() -> None:
    torch.manual_seed(0)
    layer = FastLinear(8, 4)  # what store_frozen_in_bf16 makes of a frozen layer
    x = torch.randn(2, 8)
    exact = layer(x)
    layer.weight.data = layer.weight.data.to(torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.float32
    assert (y - exact).abs().max().item() < 0.05  # bf16's 8-bit mantissa
    one = layer(x[:1])  # the one-row path too
    torch.testing.assert_close(one, y[:1])


def test_lora_parameter_count_matches_the_built_adapters() -> None:
    for targets in ("attn", "mlp", "head", "attn,mlp,head"):
        model, _ = model_and_ids()
        add_lora(model, rank=3, alpha=1.0, targets=parse_targets(targets))
        built = sum(p.numel() for p in lora_state_dict(model).values())
        assert lora_parameter_count(CONFIG, 3, targets) == built, targets


def test_lora_parameter_count_follows_the_mlp_and_a_rope_model_builds_from_its_base() -> None:
    """SwiGLU's wider c_fc (gate and up) and narrower hidden side are counted; a base with no
    position table (rotary) loads for LoRA."""
    from dataclasses import replace

    from gptscratch.checkpoints.load import fit_block_size

    config = replace(CONFIG, activation="swiglu", positions="rope")
    model = GPT(config)
    fitted = fit_block_size(model.state_dict(), config.block_size)
    assert "transformer.wpe.weight" not in fitted
    add_lora(model, rank=3, alpha=1.0, targets=parse_targets("attn,mlp"))
    built = sum(p.numel() for p in lora_state_dict(model).values())
    assert lora_parameter_count(config, 3, "attn,mlp") == built


def test_memory_estimate_parts() -> None:
    config = TrainConfig().replace(batch_size=4)
    full = estimate_training_memory(CONFIG, config)
    n = CONFIG.parameter_count()
    assert (full.weights, full.gradients, full.optimizer) == (4 * n, 4 * n, 8 * n)
    lora = estimate_training_memory(CONFIG, config.replace(lora_rank=2))
    adapters = lora_parameter_count(CONFIG, 2, "attn")
    assert (lora.gradients, lora.optimizer) == (4 * adapters, 8 * adapters)
    assert lora.weights == 4 * (n + adapters)
    halved = estimate_training_memory(CONFIG, config.replace(lora_rank=2), low_precision=True)
    assert halved.weights == lora.weights - 2 * CONFIG.n_layer * 12 * CONFIG.n_embd ** 2
    ckpt = estimate_training_memory(CONFIG, config.replace(activation_checkpointing=True))
    assert ckpt.activations < full.activations
    assert "optimizer state" in full.describe() and full.total == sum(
        (full.weights, full.gradients, full.optimizer, full.activations))


def test_gpt2_xl_full_fine_tuning_needs_more_than_this_machine_and_lora_does_not() -> None:
    """The issue's arithmetic: GPT-2 XL's 1.56B parameters take ~25 GB to fine-tune fully in
    fp32 before activations, and LoRA brings that under 8 GB at batch 1 x 1024."""
    xl = ModelConfig(vocab_size=50257, block_size=1024, n_layer=48, n_head=25, n_embd=1600)
    config = TrainConfig().replace(batch_size=1)
    full = estimate_training_memory(xl, config)
    lora = estimate_training_memory(xl, config.replace(lora_rank=8, activation_checkpointing=True),
                                    low_precision=True)
    assert full.weights + full.gradients + full.optimizer > 24e9
    assert lora.total < 8e9


def test_state_hash_follows_the_weights_not_the_object() -> None:
    a, _ = model_and_ids(seed=1)
    b, _ = model_and_ids(seed=1)
    assert state_hash(a.state_dict()) == state_hash(b.state_dict())
    with torch.no_grad():
        b.transformer.h[0].attn.c_attn.weight[0, 0] += 1e-3
    assert state_hash(a.state_dict()) != state_hash(b.state_dict())
