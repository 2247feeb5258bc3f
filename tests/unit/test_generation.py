"""The KV cache and batched decoding, checked against the uncached model (the oracle)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import decode_steps, sample_step

from gptscratch.model.config import ModelConfig, SamplingConfig
from gptscratch.model.decoding import Decoder, window_keep
from gptscratch.model.gpt import GPT

GREEDY = SamplingConfig(temperature=0.0)

SHAPES = [
    dict(n_layer=1, n_head=1, n_embd=8, block_size=16, bias=False, attention="auto"),
    dict(n_layer=2, n_head=2, n_embd=16, block_size=24, bias=True, attention="sdpa"),
    dict(n_layer=3, n_head=4, n_embd=32, block_size=32, bias=False, attention="explicit"),
    dict(n_layer=2, n_head=3, n_embd=24, block_size=20, bias=True, attention="explicit"),
]


def _model(seed: int = 0, vocab: int = 37, **shape: object) -> GPT:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=vocab, **{**SHAPES[0], **shape})  # type: ignore[arg-type]
    model = GPT(config).eval()
    # GPT-2's init (std 0.02) gives near-uniform scores; a wider init makes every input matter:
    # tokens, positions and the attention over the context.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model


def _ids(steps: list) -> list[list[int]]:
    """Per-step ids -> per-row token lists."""
    return torch.stack([s.ids for s in steps], dim=1).tolist()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prompt_len", [1, 5])
def test_greedy_with_and_without_cache_is_identical(shape: dict, prompt_len: int) -> None:
    model = _model(**shape)
    prompt = torch.randint(0, 37, (2, prompt_len))
    n = shape["block_size"] - prompt_len  # fills the context exactly
    cached = _ids(list(decode_steps(model, prompt, n, GREEDY)))
    uncached = _ids(list(decode_steps(model, prompt, n, GREEDY, use_cache=False)))
    assert cached == uncached


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_cached_logits_equal_the_full_forward(shape: dict) -> None:
    model = _model(**shape)
    prompt = torch.randint(0, 37, (3, 4))
    decoder = Decoder(model, prompt.tolist())
    for _ in range(shape["block_size"] - 4):
        logits = decoder.logits()
        with torch.no_grad():
            full = model(decoder.seq)[:, -1]
        torch.testing.assert_close(logits, full, rtol=1e-5, atol=1e-5)
        decoder.append(logits.argmax(-1, keepdim=True))


def test_seeded_sampling_with_and_without_cache_is_identical() -> None:
    model = _model(n_layer=2, n_head=2, n_embd=16, block_size=24)
    prompt = torch.randint(0, 37, (3, 3))
    sampling = SamplingConfig(temperature=1.0, top_k=20, top_p=0.95)
    runs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(7)
        runs.append(_ids(list(decode_steps(model, prompt, 20, sampling, g, use_cache))))
    assert runs[0] == runs[1]


def test_generation_slides_past_the_context() -> None:
    """Past block_size, the cached decoder keeps the newest window_keep tokens and re-prefills:
    each step equals the model run on exactly that window."""
    model = _model(n_layer=2, n_head=2, n_embd=16, block_size=12, bias=True)
    block, keep = 12, window_keep(12)
    prompt = [3, 1, 4, 1, 5]
    cached = _ids(list(decode_steps(model, [prompt], 40, GREEDY)))[0]
    tokens, start, expected = list(prompt), 0, []
    for _ in range(40):
        if len(tokens) - start > block:
            start = len(tokens) - keep
        with torch.no_grad():
            logits = model(torch.tensor([tokens[start:]]))[0, -1]
        expected.append(int(logits.argmax()))
        tokens.append(expected[-1])
    assert cached == expected
    assert len(cached) == 40


@pytest.mark.parametrize("use_cache", [True, False])
def test_batched_prompts_of_different_lengths_match_single_runs(use_cache: bool) -> None:
    model = _model(n_layer=2, n_head=2, n_embd=16, block_size=16, bias=True)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    batched = _ids(list(decode_steps(model, prompts, 25, GREEDY, use_cache=use_cache)))
    for row, prompt in enumerate(prompts):
        alone = _ids(list(decode_steps(model, [prompt], 25, GREEDY, use_cache=use_cache)))[0]
        assert batched[row] == alone, f"row {row}"


def test_padded_rows_get_their_own_positions_and_logits() -> None:
    model = _model(n_layer=2, n_head=2, n_embd=16, block_size=16)
    short, long = [5, 6], [1, 2, 3, 4, 5, 6]
    decoder = Decoder(model, [short, long])
    logits = decoder.logits()
    with torch.no_grad():
        alone = model(torch.tensor([short]))[0, -1]
    torch.testing.assert_close(logits[0], alone, rtol=1e-5, atol=1e-5)


def test_samples_of_one_prompt_share_a_prefill_and_differ() -> None:
    model = _model(n_layer=2, n_head=2, n_embd=16, block_size=32)
    prompt = [[1, 2, 3, 4]] * 4
    g = torch.Generator().manual_seed(0)
    rows = _ids(list(decode_steps(model, prompt, 12, SamplingConfig(temperature=1.5), g)))
    assert len({tuple(r) for r in rows}) > 1  # independent samples, not copies
    greedy = _ids(list(decode_steps(model, prompt, 12, GREEDY)))
    assert all(r == greedy[0] for r in greedy)


def test_the_engines_logprobs_are_the_models_own() -> None:
    from gptscratch.data.tokenizers import CharTokenizer
    from gptscratch.generation.engine import Engine, Row, RowRequest

    model = _model(n_layer=2, n_head=2, n_embd=16, block_size=32)
    letters = CharTokenizer([chr(ord("0") + i) for i in range(37)])
    row = Row(RowRequest((1, 2, 3), 5, SamplingConfig(temperature=1.0), seed=1), lambda e: None)
    Engine(model, letters).run_to_end([row])
    assert len(row.generated) == 5
    for i, token in enumerate(row.generated):
        with torch.no_grad():
            expected_logp = F.log_softmax(model(torch.tensor([row.context[:3 + i]]))[0, -1], -1)
        assert row.logprobs[i] == pytest.approx(expected_logp[token].item(), abs=1e-5)


def test_dropping_finished_rows_keeps_the_others_exact() -> None:
    model = _model(n_layer=2, n_head=2, n_embd=16, block_size=20)
    prompts = [[1, 2], [3, 4, 5], [6]]
    decoder = Decoder(model, prompts)
    sample_step(decoder, GREEDY)
    decoder.keep(torch.tensor([0, 2]))  # row 1 finished
    rest = [sample_step(decoder, GREEDY).ids.tolist() for _ in range(8)]
    full = _ids(list(decode_steps(model, prompts, 9, GREEDY)))
    assert [r[0] for r in rest] == full[0][1:]
    assert [r[1] for r in rest] == full[2][1:]
    assert decoder.rows.tolist() == [0, 2]


def test_bfloat16_weights_generate() -> None:
    model = _model(n_layer=2, n_head=2, n_embd=16, block_size=20).to(torch.bfloat16)
    steps = list(decode_steps(model, [[1, 2, 3]], 10, GREEDY))
    assert len(steps) == 10 and steps[0].logprobs.dtype == torch.float32


def test_one_row_bf16_linear_path_matches_f_linear() -> None:
    from gptscratch.model.fast import FastLinear

    torch.manual_seed(0)
    layer = FastLinear(64, 96).to(torch.bfloat16)
    x = torch.randn(1, 1, 64, dtype=torch.bfloat16)
    expected = F.linear(x.float(), layer.weight.float(), layer.bias.float())
    out = layer(x)
    assert out.shape == (1, 1, 96) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)
    batch = torch.randn(3, 5, 64, dtype=torch.bfloat16)  # more rows: the ordinary path
    torch.testing.assert_close(layer(batch), F.linear(batch, layer.weight, layer.bias))


def _greedy_logits(decoder: Decoder, steps: int) -> list[torch.Tensor]:
    """Feed back the argmax `steps` times; each step's (B, V) logits."""
    out = []
    for _ in range(steps):
        logits = decoder.logits()
        out.append(logits)
        decoder.append(logits.argmax(-1, keepdim=True))
    return out


@pytest.mark.parametrize("one_prompt", [False, True])
def test_rows_added_mid_decoding_get_what_they_get_alone(one_prompt: bool) -> None:
    """The serving engine's join: rows prefilled on their own and merged into a running batch
    (shorter and longer than it) give the logits they give alone, and the running rows are
    untouched; then rows leave and the common padding is trimmed."""
    model = _model(n_layer=2, n_head=2, n_embd=16, block_size=16, bias=True)
    first = [[1, 2, 3], [4, 5, 6, 7, 8]]
    long = [9, 10, 11, 12, 13, 14, 15, 16, 17]
    joining = [long, list(long)] if one_prompt else [long, [20]]  # n samples of one prompt
    decoder = Decoder(model, first)
    before = _greedy_logits(decoder, 3)
    decoder.add(joining)
    after = _greedy_logits(decoder, 4)
    decoder.keep(torch.tensor([1, 3]))  # the shortest-context rows leave...
    decoder.drop_common_padding()  # ...and what only they used is trimmed
    assert decoder.cache is not None and int(decoder.cache.pad.min()) == 0
    last = _greedy_logits(decoder, 3)
    for row, prompt in enumerate(first):
        alone = _greedy_logits(Decoder(model, [prompt]), 10)
        got = [s[row] for s in before] + [s[row] for s in after]
        if row == 1:
            got += [s[0] for s in last]
        torch.testing.assert_close(torch.stack(got), torch.stack(alone[:len(got)])[:, 0],
                                   rtol=0, atol=1e-5)
    for j, prompt in enumerate(joining):
        alone = _greedy_logits(Decoder(model, [prompt]), 7)
        got = [s[2 + j] for s in after] + ([s[1] for s in last] if j == 1 else [])
        torch.testing.assert_close(torch.stack(got), torch.stack(alone[:len(got)])[:, 0],
                                   rtol=0, atol=1e-5)


def test_a_cache_shifts_and_refuses_to_drop_real_positions() -> None:
    model = _model(n_layer=1, n_head=1, n_embd=8, block_size=8)
    cache = model.new_kv_cache(2, torch.tensor([0, 2]))
    with torch.no_grad():
        model.features(torch.tensor([[1, 2, 3], [0, 0, 4]]), cache)
    k = cache.k.clone()
    cache.shift(3)
    assert cache.length == 6 and cache.pad.tolist() == [3, 5]
    torch.testing.assert_close(cache.k[:, :, :, 3:6], k[:, :, :, :3])
    assert not cache.k[:, :, :, :3].any()
    cache.shift(-3)
    torch.testing.assert_close(cache.k, k)
    with pytest.raises(ValueError):
        cache.shift(-1)  # row 0 has no padding to give
    with pytest.raises(ValueError):
        cache.shift(6)  # past the cache's 8 positions
