"""One forward: what explain, the attention pictures, the logit lens and the playground show
is what `GPT.forward` computes, for GPT-2's architecture and for the modern recipe's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptscratch.data.tokenizers import CharTokenizer
from gptscratch.evaluation.explain import explain_prompt
from gptscratch.model.attention import explicit_attention
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT, Trace
from gptscratch.model.rotary import apply_rotary, rotary_angles
from gptscratch.server.playground import attention_at
from gptscratch.viz.attention import attention_maps
from gptscratch.viz.logit_lens import logit_lens

TEXT = "To be, or not to be: that is the question."
GPT2 = dict(positions="learned", norm="layernorm", activation="gelu_tanh")
MODERN = dict(positions="rope", norm="rmsnorm", qk_norm=True, activation="relu2",
              logit_softcap=15.0)


def _model(options: dict[str, object], tokenizer: CharTokenizer) -> GPT:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2,
                         n_embd=16, attention="sdpa", **options)  # type: ignore[arg-type]
    model = GPT(config).eval()
    with torch.no_grad():  # trained-looking weights: attention far from uniform
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("options", [GPT2, MODERN], ids=["gpt2", "modern"])
def test_every_view_reads_the_models_own_forward(options: dict[str, object]) -> None:
    tokenizer = CharTokenizer.from_text(TEXT)
    model = _model(options, tokenizer)
    idx = torch.tensor([tokenizer.encode(TEXT)])
    T = idx.size(1)
    with torch.no_grad():
        logits = model(idx)  # the fused path, as training and generation run it
        trace = Trace()
        traced = model(idx, trace=trace)
    torch.testing.assert_close(traced, logits, atol=1e-5, rtol=1e-5)
    assert len(trace.blocks) == 2 and trace.final is not None
    torch.testing.assert_close(model.logits(trace.final), logits, atol=1e-5, rtol=1e-5)
    # The weights a trace keeps are attention written out by hand from its own q and k.
    block = trace.blocks[0]
    q, k, v = (t.view(1, T, 2, 8).transpose(1, 2) for t in block["qkv"].split(16, dim=2))
    attn = model.transformer.h[0].attn
    if options is MODERN:
        q, k = attn.q_norm(q), attn.k_norm(k)
        cos, sin = rotary_angles(torch.arange(T), 8)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    _, expected = explicit_attention(q, k, v)
    torch.testing.assert_close(block["weights"], expected)

    stages = explain_prompt(model, tokenizer, TEXT)
    torch.testing.assert_close(stages[-2].output, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stages[-1].output, F.softmax(logits[0, -1], -1), atol=1e-5,
                               rtol=1e-5)
    maps = attention_maps(model, tokenizer, TEXT).weights  # (L, H, T, T)
    for layer in range(2):
        torch.testing.assert_close(torch.from_numpy(maps[layer]), trace.blocks[layer]["weights"][0])
    heads = attention_at(model, idx[0].tolist(), 7)
    torch.testing.assert_close(torch.tensor(heads), trace.blocks[-1]["weights"][0, :, 7, :8])
    lens = logit_lens(model, tokenizer, TEXT)
    final = F.softmax(logits[0].float(), -1).max(-1)
    assert lens.top_ids[-1].tolist() == final.indices.tolist()  # its last row is the output
    torch.testing.assert_close(torch.from_numpy(lens.top_probs[-1]), final.values, atol=1e-5,
                               rtol=1e-5)
    first = F.softmax(model.logits(model.transformer.ln_f(trace.embedded))[0], -1).max(-1)
    torch.testing.assert_close(torch.from_numpy(lens.top_probs[0]), first.values)


def test_a_trace_works_with_the_kv_cache() -> None:
    tokenizer = CharTokenizer.from_text(TEXT)
    model = _model(MODERN, tokenizer)
    idx = torch.tensor([tokenizer.encode(TEXT)])
    cache = model.new_kv_cache(1)
    with torch.no_grad():
        trace = Trace()
        cached = model(idx[:, :10], cache, trace)
        torch.testing.assert_close(cached, model(idx[:, :10]), atol=1e-5, rtol=1e-5)
    assert trace.blocks[0]["weights"].shape == (1, 2, 10, 10)
