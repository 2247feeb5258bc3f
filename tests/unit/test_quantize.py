"""Int8 weights (`model/quantize.py`, `--quantize int8`): the kernel computes what the
dequantized weight does, the rounding stays within half a step, the quantized GPT stays close
to its fp32 self and decodes through the one engine, and the loader's refusals come first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import cli_error
from torch import nn

from gptscratch import api
from gptscratch.checkpoints.load import load_model
from gptscratch.cli import main
from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT, lm_loss
from gptscratch.model.quantize import (
    Int8Linear,
    is_quantized,
    quantize_linears,
    quantize_rows,
    reference_forward,
    weight_bytes,
)


def tiny_gpt(**kw: object) -> GPT:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=97, block_size=64, n_layer=2, n_head=2, n_embd=64, **kw)
    return GPT(config).eval()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 48), (3, 5, 48), (1, 1, 48)])
def test_the_kernel_computes_the_written_out_formulas(bias: bool,
                                                      shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    layer = Int8Linear(nn.Linear(48, 40, bias=bias))
    x = torch.randn(*shape) * 3 + 0.5  # not centred: the zero point matters
    got = layer(x)
    assert got.shape == (*shape[:-1], 40) and got.dtype == torch.float32
    expected = reference_forward(layer, x).float().view(*shape[:-1], 40)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_each_row_rounds_within_half_a_step_and_keeps_its_largest_weight() -> None:
    torch.manual_seed(2)
    w = torch.randn(30, 50) * torch.logspace(-3, 1, 30)[:, None]  # rows of very different sizes
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()
    rows, largest = torch.arange(30), w.abs().argmax(dim=1)
    assert q[rows, largest].abs().eq(127).all()
    torch.testing.assert_close(q[rows, largest].float() * scale, w[rows, largest])
    linear = nn.Linear(50, 30, bias=False)
    linear.weight.data = w
    stored_q, stored_scale, bias = Int8Linear(linear).int8_weight()
    assert stored_q.equal(q) and bias is None
    torch.testing.assert_close(stored_scale, scale)


def test_a_zero_row_and_a_zero_input_stay_zero() -> None:
    linear = nn.Linear(8, 3, bias=False)
    linear.weight.data[1] = 0.0
    layer = Int8Linear(linear)
    assert layer(torch.randn(2, 8))[:, 1].eq(0).all()
    assert layer(torch.zeros(2, 8)).eq(0).all()


@pytest.mark.parametrize("recipe", [{}, dict(positions="rope", norm="rmsnorm",
                                             activation="relu2", tie_embeddings=False)])
def test_the_quantized_gpt_stays_close_to_its_fp32_self(recipe: dict[str, object]) -> None:
    model = tiny_gpt(**recipe)
    ids = torch.randint(0, 97, (2, 64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = model(ids)
        quantized = quantize_linears(model)(ids)
    assert is_quantized(model)
    assert not [m for m in model.modules() if type(m) is nn.Linear]
    # Measured on these random weights: logits within 0.029 of the largest at worst (the
    # modern recipe), losses 0.005 % apart, 97 % of the greedy tokens the same.
    error = (quantized - reference).abs().max() / reference.abs().max()
    assert error < 0.05, error
    loss, q_loss = lm_loss(reference[:, :-1], ids[:, 1:]), lm_loss(quantized[:, :-1], ids[:, 1:])
    assert abs(q_loss - loss) / loss < 0.005, (q_loss, loss)
    agree = (quantized.argmax(-1) == reference.argmax(-1)).float().mean()
    assert agree > 0.95, agree


def test_int8_weights_are_about_a_quarter_of_the_bytes() -> None:
    model = tiny_gpt()
    before = weight_bytes(model)
    after = weight_bytes(quantize_linears(model))
    assert 0.25 < after / before < 0.3, after / before  # the scales, biases and norms stay fp32


def test_a_quantized_checkpoint_decodes_with_the_kv_cache_as_without(tiny_run: Path) -> None:
    loaded = load_model(tiny_run, quantize="int8")
    assert is_quantized(loaded.model)
    cached = api.complete(loaded, "ROMEO:", max_new_tokens=20, temperature=0.0)[0]
    uncached = api.complete(loaded, "ROMEO:", max_new_tokens=20, temperature=0.0,
                            use_cache=False)[0]
    assert cached.text == uncached.text and len(cached.token_ids) == 20


def test_quantizing_a_loaded_model_leaves_the_callers_model_alone(tiny_run: Path) -> None:
    loaded = load_model(tiny_run)
    quantized = load_model(loaded, quantize="int8")
    assert is_quantized(quantized.model) and not is_quantized(loaded.model)
    assert load_model(quantized, quantize="int8") is quantized


@pytest.mark.parametrize("kwargs, expected", [
    (dict(quantize="int4"), "unknown quantization 'int4'; choose none or int8"),
    (dict(quantize="int8", device="cuda"), "--quantize int8 is a CPU decoding path, not for "
                                           "cuda; on a GPU use --dtype bfloat16"),
    (dict(quantize="int8", dtype="bfloat16"), "--quantize int8 computes in float32 around its "
                                              "int8 weights, not in bfloat16"),
])
def test_refusals_come_before_the_load(kwargs: dict[str, str], expected: str,
                                       tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        load_model(tmp_path / "no-such-run", **kwargs)  # the source is never read
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_eval_measures_what_int8_costs(tiny_run: Path) -> None:
    full = api.evaluate(tiny_run)
    int8 = api.evaluate(tiny_run, quantize="int8")
    assert int8.tokens == full.tokens
    assert abs(int8.loss - full.loss) / full.loss < 0.01



def test_sample_and_the_server_decode_with_int8_weights(
        tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's and the server's text is the library's with the int8 model (the oracle)."""
    from serving import client, running

    want = api.complete(load_model(tiny_run, quantize="int8"), "ROMEO:", max_new_tokens=20,
                        temperature=0.0)[0]
    assert main(["sample", "--ckpt", str(tiny_run), "--prompt", "ROMEO:", "--quantize", "int8",
                 "--max-new-tokens", "20", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.rstrip("\n").endswith(want.text)
    with running(api.server_app(tiny_run, quantize="int8")) as url:
        out = client(url).completions.create(model="tiny", prompt="ROMEO:", max_tokens=20,
                                             temperature=0.0)
    assert out.choices[0].text == want.text


def test_the_cli_refuses_int8_with_bf16_in_one_line(
        tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = cli_error(["sample", "--ckpt", str(tiny_run), "--prompt", "A", "--quantize",
                         "int8", "--dtype", "bfloat16"], capsys)
    assert "--quantize int8 computes in float32" in message
