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


def _words(options: dict[str, object]) -> dict[str, str]:
    """explain's stages of a tiny model with `options`: name -> explanation and detail."""
    tokenizer = CharTokenizer.from_text(TEXT)
    stages = explain_prompt(_model(options, tokenizer), tokenizer, TEXT)
    return {s.name: f"{s.explanation} | {s.detail}" for s in stages}


@pytest.mark.parametrize(("options", "stage", "said", "not_said"), [
    (dict(norm="layernorm", bias=True), "final LayerNorm", "one more LayerNorm", "RMSNorm"),
    (dict(norm="layernorm", bias=True), "block 0: ln_1", "scale and shift", "no shift"),
    (dict(norm="layernorm", bias=False), "block 0: ln_1", "no shift: the model has no biases",
     "scale and shift"),
    (dict(norm="rmsnorm"), "final RMSNorm", "one more RMSNorm", "LayerNorm"),
    (dict(norm="rmsnorm"), "block 1: ln_2", "another RMSNorm", "LayerNorm"),
    (dict(positions="learned"), "+ position embedding", "table wpe is added", "rotary"),
    (dict(positions="rope"), "rotary positions", "no position vector is added", "wpe"),
    (dict(positions="rope"), "block 0: attention weights", "rotated by their positions",
     "wpe"),
    (dict(qk_norm=True), "block 0: attention weights", "RMS-normalised per head", "rotated"),
    (dict(qk_norm=False), "block 0: attention weights", "softmax(q k^T / sqrt(8))",
     "normalised"),
    (dict(activation="gelu_tanh"), "block 0: MLP", "GELU (GPT-2's tanh approximation)",
     "exact"),
    (dict(activation="gelu"), "block 0: MLP", "GELU (exact)", "tanh"),
    (dict(activation="relu2"), "block 0: MLP", "relu(x)^2", "GELU"),
    (dict(activation="swiglu"), "block 0: MLP", "SwiGLU, silu(gate) * up", "GELU"),
    (dict(tie_embeddings=True), "LM head", "sharing its weight with wte", "own"),
    (dict(tie_embeddings=False), "LM head", "its own (", "sharing"),
    (dict(logit_softcap=0.0), "LM head", "at every position |", "soft-capped"),
    (dict(logit_softcap=15.0), "LM head", "15 * tanh(score / 15) keeps every score inside +-15",
     "at every position |"),
])
def test_explain_describes_the_model_it_explains(options: dict[str, object], stage: str,
                                                 said: str, not_said: str) -> None:
    """Every option of the architecture changes explain's words for the stage it changes (the
    main job's RMSNorm, soft-cap and rotary model is not described as GPT-2)."""
    words = _words(options)
    assert stage in words, list(words)
    assert said in words[stage] and not_said not in words[stage], words[stage]


def test_explain_shows_the_soft_cap_holding() -> None:
    words = _words(dict(logit_softcap=2.0))
    largest = float(words["LM head"].split("largest score ")[1].split(" ")[0])
    assert 0 < largest <= 2.0
