"""Our GPT against Hugging Face's GPT-2 as the oracle: the config and weight mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hf_models import greedy, hf_greedy, make_hf_model, transformers

from gptscratch.checkpoints.huggingface import (
    hf_config_from_model,
    model_config_from_hf,
    read_hf_tensors,
    state_dict_from_hf,
    state_dict_to_hf,
)
from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT

CONFIGS = {
    "small": dict(n_embd=16, n_head=2, n_layer=2, n_positions=32),
    "odd-heads": dict(n_embd=15, n_head=3, n_layer=3, n_positions=40),
    "untied-5-heads": dict(n_embd=20, n_head=5, n_layer=2, n_positions=17,
                           tie_word_embeddings=False),
    "one-head-gelu-tanh": dict(n_embd=12, n_head=1, n_layer=1, n_positions=24,
                               activation_function="gelu_pytorch_tanh"),
    # HF's "gelu" is the exact GELU: our activation "gelu" (the shakespeare-char preset's).
    "exact-gelu": dict(n_embd=16, n_head=2, n_layer=2, n_positions=32, activation_function="gelu"),
    # HF's eager attention with fp32 upcast + reordering: the same function, another code path.
    "eager-upcast": dict(n_embd=16, n_head=4, n_layer=2, n_positions=20,
                         reorder_and_upcast_attn=True, attn_implementation="eager"),
}


def ours_from(hf: Any) -> GPT:
    config = model_config_from_hf(hf.config.to_dict(), "test")
    model = GPT(config).eval()
    model.load_state_dict(state_dict_from_hf(hf.state_dict(), config, "test"))
    return model


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_and_greedy_match_transformers(name: str) -> None:
    hf = make_hf_model(seed=len(name), **CONFIGS[name])
    ours = ours_from(hf)
    assert ours.config.block_size == hf.config.n_positions
    assert ours.config.tie_embeddings == hf.config.tie_word_embeddings
    ids = torch.randint(0, hf.config.vocab_size, (3, hf.config.n_positions),
                        generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours(ids) - hf(ids).logits).abs().max().item()
    assert diff < 1e-5
    prompt = ids[:1, :4]
    steps = hf.config.n_positions - 4
    assert greedy(ours, prompt, steps, ours.config.block_size) == hf_greedy(hf, prompt, steps)


def test_tied_head_is_shared_and_untied_head_is_its_own() -> None:
    tied = ours_from(make_hf_model(**CONFIGS["small"]))
    untied = ours_from(make_hf_model(**CONFIGS["untied-5-heads"]))
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert not torch.equal(untied.lm_head.weight, untied.transformer.wte.weight)


@pytest.mark.parametrize("name", ["small", "untied-5-heads", "exact-gelu"])
def test_export_mapping_restores_every_hf_tensor_exactly(name: str) -> None:
    hf = make_hf_model(**CONFIGS[name])
    ours = ours_from(hf)
    back = state_dict_to_hf(ours.state_dict(), ours.config)
    expected = {k: v for k, v in hf.state_dict().items()
                if not (k == "lm_head.weight" and hf.config.tie_word_embeddings)}
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in expected)


def test_a_model_without_biases_exports_zero_biases_with_the_same_logits() -> None:
    from gptscratch.checkpoints.huggingface import hf_config_from_model
    from gptscratch.model.config import ModelConfig

    config = ModelConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=8, bias=False)
    torch.manual_seed(0)
    ours = GPT(config).eval()
    hf_cfg = {k: v for k, v in hf_config_from_model(config, None, None).items()
              if k not in ("architectures", "model_type")}
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**hf_cfg)).eval()
    hf.load_state_dict(state_dict_to_hf(ours.state_dict(), config), strict=False)
    ids = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max().item() < 1e-5


def test_openai_style_pytorch_bin_with_bare_names_and_mask_buffers(tmp_path: Path) -> None:
    """OpenAI's uploads use GPT2Model names (`h.0...`) and old ones carry causal-mask buffers;
    they load through torch.load(weights_only=True)."""
    hf = make_hf_model(**CONFIGS["odd-heads"])
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()}
    n = hf.config.n_positions
    for i in range(hf.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "pytorch_model.bin")
    config = model_config_from_hf(hf.config.to_dict(), "test")
    model = GPT(config).eval()
    model.load_state_dict(state_dict_from_hf(read_hf_tensors(tmp_path), config, "test"))
    ids = torch.randint(0, hf.config.vocab_size, (2, n))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() < 1e-5


def test_sharded_safetensors_are_read_whole(tmp_path: Path) -> None:
    hf = make_hf_model(tmp_path, **CONFIGS["odd-heads"])
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    one, many = read_hf_tensors(tmp_path), read_hf_tensors(tmp_path / "sharded")
    assert one.keys() == many.keys() and all(torch.equal(one[k], many[k]) for k in one)


# GPT-2's four released sizes and their published parameter counts (the tied head once).
SIZES = {
    "gpt2": (dict(n_embd=768, n_layer=12, n_head=12), 124_439_808),
    "gpt2-medium": (dict(n_embd=1024, n_layer=24, n_head=16), 354_823_168),
    "gpt2-large": (dict(n_embd=1280, n_layer=36, n_head=20), 774_030_080),
    "gpt2-xl": (dict(n_embd=1600, n_layer=48, n_head=25), 1_557_611_200),
}


@pytest.mark.parametrize("size", SIZES)
def test_every_gpt2_size_maps_to_the_same_parameter_count(size: str) -> None:
    shape, published = SIZES[size]
    hf_config = transformers.GPT2Config(**shape)
    config = model_config_from_hf(hf_config.to_dict(), size)
    assert (config.vocab_size, config.block_size) == (50257, 1024)
    assert (config.n_layer, config.n_head, config.n_embd) == (
        shape["n_layer"], shape["n_head"], shape["n_embd"])
    with torch.device("meta"):  # shapes only: no memory, no init
        ours = GPT(config)
        hf = transformers.GPT2LMHeadModel(hf_config)
    hf_count = sum(p.numel() for p in hf.parameters())  # parameters() lists a tied one once
    assert ours.num_params(non_embedding=False) == hf_count == published


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (dict(activation_function="relu"), "activation_function='relu'"),
        (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
        (dict(scale_attn_weights=False), "scale_attn_weights"),
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
        (dict(n_inner=24), "n_inner=24"),
        (dict(add_cross_attention=True), "add_cross_attention"),
        (dict(model_type="llama"), "llama model"),
        (dict(n_embd=15, n_head=2), "n_embd (15) must be divisible"),
    ],
)
def test_variants_our_model_does_not_compute_are_refused(change: dict[str, Any],
                                                          expected: str) -> None:
    config = {**make_hf_model(**CONFIGS["small"]).config.to_dict(), **change}
    with pytest.raises(UserError, match="^[^\n]*$") as info:
        model_config_from_hf(config, "'x/config.json'")
    assert expected in str(info.value)


def test_mismatched_shapes_and_names_are_refused() -> None:
    hf = make_hf_model(**CONFIGS["small"])
    config = model_config_from_hf(hf.config.to_dict(), "x")
    state = hf.state_dict()
    state["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(16, 63)
    with pytest.raises(UserError, match=r"transformer\.h\.1\.mlp\.c_fc\.weight has shape"):
        state_dict_from_hf(state, config, "x")
    del state["transformer.h.1.mlp.c_fc.weight"]
    with pytest.raises(UserError, match="missing"):
        state_dict_from_hf(state, config, "x")


@pytest.mark.parametrize(("ours", "hf_name"), [("gelu_tanh", "gelu_new"), ("gelu", "gelu")])
def test_activation_round_trips_through_the_hf_config(ours: str, hf_name: str) -> None:
    config = ModelConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=8,
                         activation=ours)
    hf = hf_config_from_model(config, None, None)
    assert hf["activation_function"] == hf_name
    assert model_config_from_hf(hf, "exported").activation == ours
