"""The modern-recipe model options against oracles: rotary positions against complex-number
rotation, RMSNorm against torch.nn.RMSNorm, the ReLU^2 and SwiGLU MLPs against their formulas,
the explicit attention path against SDPA, cached against uncached generation (also with a
context longer than trained), and the parameter count against the built model. Every option
defaults to GPT-2's (tested in test_model.py)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import decode_steps

from gptscratch.checkpoints.checkpoint import load_checkpoint, save_checkpoint
from gptscratch.checkpoints.convert import export_hf
from gptscratch.checkpoints.huggingface import hf_config_from_model, state_dict_to_hf
from gptscratch.checkpoints.load import LoadedModel, load_model, with_context
from gptscratch.data.tokenizers.char import CharTokenizer
from gptscratch.errors import UserError
from gptscratch.model.attention import CausalSelfAttention
from gptscratch.model.config import ModelConfig, SamplingConfig, swiglu_hidden
from gptscratch.model.decoding import Decoder, window_keep
from gptscratch.model.gpt import GPT, Trace, lm_loss
from gptscratch.model.layers import NORM_EPS, ReLU2MLP, RMSNorm, SwiGLUMLP
from gptscratch.model.lora import add_lora, merge_lora
from gptscratch.model.rotary import apply_rotary, rotary_angles

GREEDY = SamplingConfig(temperature=0.0)
ALL_ON = dict(positions="rope", norm="rmsnorm", qk_norm=True, activation="swiglu",
              zero_init_proj=True, logit_softcap=10.0)


def tiny(**kw: object) -> ModelConfig:
    base: dict[str, object] = dict(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=16)
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


def wide_init(model: GPT, seed: int = 0) -> GPT:
    """Random weights wider than GPT-2's init (and non-zero, whatever zero_init_proj did), so
    every input, position and gain matters; the norms' gains random around 1."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
            elif name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
    return model.eval()


def _ids(steps: list) -> list[list[int]]:
    return torch.stack([s.ids for s in steps], dim=1).tolist()


# --- Rotary -------------------------------------------------------------------------------

def complex_rotary(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The oracle, in float64: channel pairs (j, j + D/2) as complex numbers (the half-split
    pairing rotary.py uses), each multiplied by exp(i * pos * theta_j), theta_j =
    10000^(-2j / D). x: (B, H, T, D); positions: (T,) or (B, T)."""
    D = x.size(-1)
    z = torch.complex(x[..., : D // 2].double(), x[..., D // 2:].double())  # (B, H, T, D/2)
    theta = torch.tensor([10000.0 ** (-2 * j / D) for j in range(D // 2)], dtype=torch.float64)
    pos = positions.double()
    if pos.dim() == 2:
        pos = pos[:, None]  # (B, 1, T): the same positions for every head of a row
    turned = z * torch.polar(torch.ones_like(theta), pos[..., None] * theta)
    return torch.cat([turned.real, turned.imag], dim=-1)


@pytest.mark.parametrize("per_row", [False, True])
def test_rotary_matches_complex_multiplication(per_row: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 8)
    positions = (torch.tensor([[0, 0, 0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11]]) if per_row
                 else torch.arange(100, 107))  # far positions too: angles of ~100 radians
    cos, sin = rotary_angles(positions, 8)
    got = apply_rotary(x, cos, sin)
    torch.testing.assert_close(got.double(), complex_rotary(x, positions), atol=1e-5, rtol=0)
    assert got.dtype == x.dtype
    assert torch.allclose(got.norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # a rotation


def test_rotary_scores_depend_only_on_relative_position() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(2, 1, 1, 5, 16).unbind(0)
    pos = torch.arange(5)

    def scores(shift: int) -> torch.Tensor:
        cos, sin = rotary_angles(pos + shift, 16)
        return apply_rotary(q, cos, sin) @ apply_rotary(k, cos, sin).transpose(-2, -1)

    torch.testing.assert_close(scores(0), scores(37), atol=1e-4, rtol=0)
    # ...and the positions do matter: without rotary the scores differ.
    assert not torch.allclose(scores(0), q @ k.transpose(-2, -1), atol=1e-2)


def test_rope_model_has_no_position_table() -> None:
    model = GPT(tiny(positions="rope"))
    assert model.transformer.wpe is None
    assert not any("wpe" in n for n, _ in model.named_parameters())
    assert model.num_params() == model.num_params(non_embedding=False)


# --- Attention with qk_norm and rotary ----------------------------------------------------

def test_attention_matches_a_written_out_oracle_with_qk_norm_and_rope() -> None:
    config = tiny(positions="rope", qk_norm=True, n_head=2, n_embd=16, attention="sdpa")
    torch.manual_seed(0)
    attn = CausalSelfAttention(config).eval()
    with torch.no_grad():
        attn.q_norm.weight.uniform_(0.5, 1.5)  # type: ignore[union-attr]
        attn.k_norm.weight.uniform_(0.5, 1.5)  # type: ignore[union-attr]
    x = torch.randn(2, 6, 16)
    B, T, C, H, D = 2, 6, 16, 2, 8
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in attn.c_attn(x).split(C, dim=2))
    oracle_norm = torch.nn.RMSNorm(D, eps=NORM_EPS)
    with torch.no_grad():
        oracle_norm.weight.copy_(attn.q_norm.weight)  # type: ignore[union-attr]
        q = complex_rotary(oracle_norm(q), torch.arange(T)).float()
        oracle_norm.weight.copy_(attn.k_norm.weight)  # type: ignore[union-attr]
        k = complex_rotary(oracle_norm(k), torch.arange(T)).float()
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
    expected = attn.c_proj(y)
    for path in ("sdpa", "explicit"):
        attn.path = path
        torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn(x, trace={}), expected, atol=1e-5, rtol=1e-5)


def test_explicit_and_sdpa_paths_agree_with_every_option_on() -> None:
    sdpa = wide_init(GPT(tiny(**ALL_ON, attention="sdpa")))
    explicit = GPT(tiny(**ALL_ON, attention="explicit")).eval()
    explicit.load_state_dict(sdpa.state_dict())
    idx = torch.randint(0, 37, (3, 16))
    with torch.no_grad():
        a, b = sdpa(idx), explicit(idx)
        trace = Trace()
        c = sdpa(idx, trace=trace)  # the pictures' and the server's path
        maps = [b["weights"] for b in trace.blocks]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)
    assert maps[0].shape == (3, 2, 16, 16)
    # and the options are in use: each one changes the output
    for name, gpt2 in [("qk_norm", False), ("positions", "learned"), ("norm", "layernorm")]:
        other = GPT(dataclasses.replace(sdpa.config, **{name: gpt2})).eval()
        other.load_state_dict(sdpa.state_dict(), strict=False)
        with torch.no_grad():
            assert not torch.allclose(other(idx), a, atol=1e-3), name


# --- RMSNorm, ReLU^2, SwiGLU --------------------------------------------------------------

def test_rmsnorm_matches_torch_rmsnorm() -> None:
    torch.manual_seed(0)
    ours, oracle = RMSNorm(24), torch.nn.RMSNorm(24, eps=NORM_EPS)
    with torch.no_grad():
        ours.weight.uniform_(-2, 2)
        oracle.weight.copy_(ours.weight)
    x = torch.randn(3, 5, 24) * 3 + 1  # a mean RMSNorm must not remove
    torch.testing.assert_close(ours(x), oracle(x))
    assert [n for n, _ in ours.named_parameters()] == ["weight"]
    model = GPT(tiny(norm="rmsnorm"))
    assert all(isinstance(m, RMSNorm) for m in (model.transformer.ln_f,
                                                model.transformer.h[0].ln_1))


def test_relu2_mlp_matches_its_formula() -> None:
    torch.manual_seed(0)
    mlp = ReLU2MLP(tiny(activation="relu2")).eval()
    x = torch.randn(2, 5, 16)
    h = x @ mlp.c_fc.weight.t() + mlp.c_fc.bias
    expected = torch.where(h > 0, h * h, 0.0) @ mlp.c_proj.weight.t() + mlp.c_proj.bias
    torch.testing.assert_close(mlp(x), expected)
    assert mlp.c_fc.weight.shape == (64, 16)  # 4C, as GPT-2's


def test_swiglu_mlp_matches_its_formula() -> None:
    torch.manual_seed(0)
    config = tiny(activation="swiglu", n_embd=96, n_head=2)
    mlp = SwiGLUMLP(config).eval()
    hidden = config.mlp_hidden
    w1, w3 = mlp.c_fc.weight[:hidden], mlp.c_fc.weight[hidden:]  # gate, up
    b1, b3 = mlp.c_fc.bias[:hidden], mlp.c_fc.bias[hidden:]
    x = torch.randn(2, 5, 96)
    gate, up = x @ w1.t() + b1, x @ w3.t() + b3
    silu = gate / (1 + torch.exp(-gate))
    expected = (silu * up) @ mlp.c_proj.weight.t() + mlp.c_proj.bias
    torch.testing.assert_close(mlp(x), expected)


@pytest.mark.parametrize(("C", "hidden"), [(384, 1024), (768, 2048), (96, 256), (16, 64)])
def test_swiglu_hidden_keeps_the_mlp_near_gelus_size(C: int, hidden: int) -> None:
    assert swiglu_hidden(C) == hidden and hidden % 64 == 0 and hidden >= 8 * C / 3
    if C >= 256:  # three C x hidden matrices against GELU's two C x 4C
        assert abs(3 * C * hidden / (2 * C * 4 * C) - 1) < 0.05


def test_lora_on_a_swiglu_mlp_adapts_the_fused_gate_and_up_projection() -> None:
    model = wide_init(GPT(tiny(activation="swiglu")))
    idx = torch.randint(0, 37, (2, 10))
    with torch.no_grad():
        before = model(idx)
    names = add_lora(model, rank=2, alpha=4.0, targets=("mlp",))
    assert names == [f"transformer.h.{i}.mlp.{n}" for i in range(2) for n in ("c_fc", "c_proj")]
    with torch.no_grad():
        torch.testing.assert_close(model(idx), before)  # B starts at zero
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0.0, 0.5)
        adapted = model(idx)
        assert not torch.allclose(adapted, before, atol=1e-3)
        torch.testing.assert_close(merge_lora(model)(idx), adapted, atol=1e-4, rtol=1e-4)


# --- Zero-init and the soft cap -----------------------------------------------------------

def test_zero_init_projections_make_every_block_the_identity() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(**ALL_ON)).eval()
    projs = [p for n, p in model.named_parameters() if n.endswith("c_proj.weight")]
    assert len(projs) == 4 and all(torch.count_nonzero(p) == 0 for p in projs)
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        for block in model.transformer.blocks():
            assert torch.equal(block(x), x)
    # GPT-2's init is not the identity: the test can tell.
    gpt2 = GPT(tiny()).eval()
    with torch.no_grad():
        assert not torch.equal(gpt2.transformer.blocks()[0](x), x)


def test_logit_softcap_bounds_the_logits_by_the_formula() -> None:
    model = wide_init(GPT(tiny(logit_softcap=5.0)))
    with torch.no_grad():
        model.lm_head.weight.mul_(10)  # raw logits well beyond the cap
        idx = torch.randint(0, 37, (2, 12))
        raw = model.lm_head(model.features(idx))
        logits = model(idx)
    assert raw.abs().max() > 20
    assert logits.abs().max() <= 5.0
    torch.testing.assert_close(logits, 5.0 * torch.tanh(raw / 5.0))
    # Generation reads the same capped logits.
    decoder = Decoder(model, idx.tolist())
    torch.testing.assert_close(decoder.logits(), logits[:, -1], atol=1e-4, rtol=1e-4)


# --- Generation with rotary positions -----------------------------------------------------

PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_rope_cached_equals_uncached_with_left_padded_rows(attention: str) -> None:
    model = wide_init(GPT(tiny(positions="rope", qk_norm=True, attention=attention)))
    n = 16 - 7  # fills the context exactly
    cached = _ids(decode_steps(model, PROMPTS, n, GREEDY))
    uncached = _ids(decode_steps(model, PROMPTS, n, GREEDY, use_cache=False))
    assert cached == uncached
    for row, prompt in enumerate(PROMPTS):  # each padded row computes what it would alone
        assert cached[row] == _ids(decode_steps(model, [prompt], n, GREEDY))[0]


def _window_oracle(model: GPT, prompts: list[list[int]], steps: int) -> list[list[int]]:
    """Greedy tokens with no cache, each from a full forward over exactly the window the
    cached decoder holds. Its rows are left-padded to one length and slide together: when the
    padded context fills, each keeps its newest window_keep columns (minus any padding)."""
    block, keep = model.config.block_size, window_keep(model.config.block_size)
    longest = max(len(p) for p in prompts)
    rows = [[None] * (longest - len(p)) + list(p) for p in prompts]  # padded columns
    start, out = 0, [[] for _ in prompts]  # type: tuple[int, list[list[int]]]
    for _ in range(steps):
        if len(rows[0]) - start > block:
            start = len(rows[0]) - keep
        for row, out_row in zip(rows, out, strict=True):
            window = [t for t in row[start:] if t is not None]
            with torch.no_grad():
                out_row.append(int(model(torch.tensor([window]))[0, -1].argmax()))
            row.append(out_row[-1])
    return out


def test_rope_generation_past_block_size_equals_the_uncached_window() -> None:
    """block_size 16, 40 new tokens: the cached decoder slides twice; with rotary positions
    the re-prefilled window starts again at position 0, which changes no score."""
    model = wide_init(GPT(tiny(**ALL_ON)))
    cached = _ids(decode_steps(model, PROMPTS, 40, GREEDY))
    assert cached == _window_oracle(model, PROMPTS, 40)
    # The uncached decoder reads the newest block_size tokens each step: its own oracle.
    uncached = _ids(decode_steps(model, [PROMPTS[1]], 40, GREEDY, use_cache=False))[0]
    tokens = list(PROMPTS[1])
    for token in uncached:
        with torch.no_grad():
            assert token == int(model(torch.tensor([tokens[-16:]]))[0, -1].argmax())
        tokens.append(token)


def test_a_rope_model_reads_a_longer_context_than_it_trained_on() -> None:
    """`with_context` (checkpoints/load.py): trained at 16, read at 40. A forward pass at 40
    equals the same weights at 16 on the first 16 positions (no table, nothing else depends on
    the length), and generation with the longer cache equals the uncached 40-token window."""
    model = wide_init(GPT(tiny(**ALL_ON)))
    short = model.config
    loaded = load_model(LoadedModel(model, CharTokenizer.from_text("abc")), block_size=40)
    longer = loaded.model
    assert longer.config.block_size == 40 and model.config is short  # the caller's is kept
    assert longer.transformer is model.transformer  # the same weights, read further
    idx = torch.randint(0, 37, (2, 40))
    with torch.no_grad():
        long_logits = longer(idx)
        torch.testing.assert_close(model(idx[:, :16]), long_logits[:, :16])
    cached = _ids(decode_steps(longer, PROMPTS, 60, GREEDY))  # slides once at 40
    assert cached == _window_oracle(longer, PROMPTS, 60)


def test_learned_positions_can_shrink_the_context_but_not_grow_it() -> None:
    config = tiny()  # learned positions: a 16-row wpe
    assert with_context(config, None) is config and with_context(config, 16) is config
    assert with_context(config, 8).block_size == 8
    with pytest.raises(UserError, match=r"block_size \(17\) is longer than the 16 positions "
                       r"this model learned .* only a model trained with rotary positions .* "
                       r"try block_size=16 or less"):
        with_context(config, 17)
    with pytest.raises(UserError, match=r"block_size \(0\) must be >= 1; try block_size=16"):
        with_context(tiny(positions="rope"), 0)
    assert with_context(tiny(positions="rope"), 4096).block_size == 4096


# --- Training, checkpoints, export --------------------------------------------------------

def test_all_options_train_save_load_and_refuse_export(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = tiny(**ALL_ON, vocab_size=10, bias=False)
    model = GPT(config)
    idx = torch.randint(0, 10, (4, 17))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = lm_loss(model(idx[:, :-1]), idx[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert abs(losses[0] - math.log(10)) < 0.1  # zero-init: the untrained model is uniform-ish
    assert losses[-1] < 0.6 * losses[0]
    tokenizer = CharTokenizer.from_text("abcdefghij")
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, {"model_config": config.to_dict()})
    loaded = load_model(load_checkpoint(tmp_path / "ckpt")).model
    assert loaded.config == config
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx[:, :-1]), model.eval()(idx[:, :-1]))
    with pytest.raises(UserError, match=r"positions='rope'") as err:
        export_hf(tmp_path / "ckpt", tmp_path / "hf")
    assert "\n" not in str(err.value) and not (tmp_path / "hf").exists()


@pytest.mark.parametrize(("option", "value"), [
    ("positions", "rope"), ("norm", "rmsnorm"), ("qk_norm", True), ("activation", "relu2"),
    ("activation", "swiglu"), ("logit_softcap", 30.0)])
def test_export_refuses_what_gpt2_cannot_express(option: str, value: object) -> None:
    config = tiny(**{option: value})
    for export in (lambda: hf_config_from_model(config, None, None),
                   lambda: state_dict_to_hf(GPT(config).state_dict(), config)):
        with pytest.raises(UserError, match=rf"{option}={value!r}.*GPT-2") as err:
            export()
        assert "\n" not in str(err.value)


def test_export_accepts_zero_init_and_both_gelus() -> None:
    for kw in (dict(zero_init_proj=True), dict(activation="gelu")):
        config = tiny(**kw)  # type: ignore[arg-type]
        assert hf_config_from_model(config, None, None)["model_type"] == "gpt2"


# --- Config -------------------------------------------------------------------------------

OPTION_GRID = list(itertools.product(
    ["learned", "rope"], ["layernorm", "rmsnorm"], [False, True],
    ["gelu_tanh", "relu2", "swiglu"], [True, False]))


@pytest.mark.parametrize(("positions", "norm", "qk_norm", "activation", "bias"), OPTION_GRID)
def test_parameter_count_matches_the_built_model(positions: str, norm: str, qk_norm: bool,
                                                 activation: str, bias: bool) -> None:
    for tie in (True, False):
        config = tiny(positions=positions, norm=norm, qk_norm=qk_norm, activation=activation,
                      bias=bias, tie_embeddings=tie, n_embd=48, n_head=3, n_layer=3)
        with torch.device("meta"):
            built = GPT(config).num_params(non_embedding=False)
        assert config.parameter_count() == built


def test_config_errors_name_the_field_and_the_fix() -> None:
    with pytest.raises(UserError, match=r"positions 'rope' needs an even head size.*= 5 .*; "
                                        r"try --n-embd 18"):
        tiny(positions="rope", n_embd=15, n_head=3)
    for kw, field in [(dict(positions="alibi"), "positions"), (dict(norm="batchnorm"), "norm"),
                      (dict(qk_norm=1), "qk_norm"), (dict(zero_init_proj="yes"), "zero_init_proj"),
                      (dict(logit_softcap=-1.0), "logit_softcap"),
                      (dict(logit_softcap=float("inf")), "logit_softcap"),
                      (dict(logit_softcap=True), "logit_softcap"),
                      (dict(activation="relu"), "activation")]:
        with pytest.raises(UserError, match=rf"^{field} \(") as err:
            tiny(**kw)
        # The library names the setting and a value to try (the CLI says it with the flag).
        assert f"try {field}=" in str(err.value) or "true or false" in str(err.value)
    # A checkpoint config from before these fields existed is GPT-2's.
    old = {k: v for k, v in tiny().to_dict().items()
           if k not in ("positions", "norm", "qk_norm", "zero_init_proj", "logit_softcap")}
    assert ModelConfig.from_dict(old) == tiny()
