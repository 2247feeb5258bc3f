"""Walk one prompt through the model, stage by stage, with shapes and a line on each.

The stages are what `GPT.forward` computed, kept by its `Trace`: tokenization, embeddings, each
block's norm, attention, residual add, norm, MLP and add, then the final norm, the LM head and
the next-token softmax. Each `Stage` keeps its output tensor for a notebook or test to inspect.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT, Trace


@dataclass(frozen=True)
class Stage:
    """One step of the forward pass."""

    name: str  # short name ("block 0: attention weights")
    shape: str  # the shape(s) going in and out, as text
    explanation: str  # one line on what happens here
    detail: str  # a line of concrete values (tokens, statistics, top predictions), or ""
    output: torch.Tensor  # the stage's output (batch of one), for closer inspection


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ")"


def _stats(t: torch.Tensor) -> str:
    t = t.float()
    return f"mean {t.mean().item():+.3f}, std {t.std().item():.3f}"


class _Stages(list[Stage]):
    """The stages found so far; `add` appends one."""

    def add(self, name: str, shape: str, explanation: str, output: torch.Tensor,
            detail: str = "") -> None:
        self.append(Stage(name, shape, explanation, detail, output))


@torch.no_grad()
def explain_prompt(model: GPT, tokenizer: Tokenizer, prompt: str, top: int = 5) -> list[Stage]:
    """Run `prompt` through `model` and describe every stage (see the module docstring)."""
    if prompt == "":
        raise UserError("the prompt is empty; give --prompt TEXT")
    ids = tokenizer.encode(prompt)[-model.config.block_size:]
    idx = torch.tensor([ids], dtype=torch.long, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    trace = Trace()
    try:
        logits = model(idx, trace=trace)  # (1, T, V)
    finally:
        model.train(was_training)
    stages = _Stages()
    _embedding_stages(model.config, tokenizer, idx, trace, stages)
    for layer, block in enumerate(trace.blocks):
        _block_stages(model.config, layer, block, tokenizer, ids, stages)
    _head_stages(model.config, tokenizer, trace, logits, top, stages)
    return stages


def _embedding_stages(cfg: ModelConfig, tokenizer: Tokenizer, idx: torch.Tensor, trace: Trace,
                      stages: _Stages) -> None:
    """Tokens to ids to the first residual stream: token plus position embeddings."""
    T, C = idx.size(1), cfg.n_embd
    ids = idx[0].tolist()
    pieces = " ".join(f"{tokenizer.decode([i])!r}={i}" for i in ids[:12])
    more = f" ... ({T - 12} more)" if T > 12 else ""
    stages.add("tokenize", f"text -> {_shape(idx)}",
               f"the {tokenizer.kind} tokenizer turns the text into {T} ids from a vocabulary "
               f"of {cfg.vocab_size}", idx, pieces + more)
    tok, pos, x = trace.tokens, trace.positions, trace.embedded
    assert tok is not None and x is not None
    stages.add("token embedding", f"{_shape(idx)} -> {_shape(tok)}",
               f"each id picks its row of the ({cfg.vocab_size}, {C}) table wte: a learned "
               "vector per token", tok, _stats(tok))
    if pos is None:
        stages.add("rotary positions", _shape(tok), "no position vector is added: each "
                   "block's attention turns its queries and keys by angles set by their "
                   "positions (RoPE)", x, _stats(x))
    else:
        stages.add("+ position embedding", f"{_shape(pos)} -> {_shape(x)}",
                   f"row t of the ({cfg.block_size}, {C}) table wpe is added at position t, "
                   "so the model knows the order", x, _stats(x))


def _norm_name(cfg: ModelConfig) -> str:
    return "RMSNorm" if cfg.norm == "rmsnorm" else "LayerNorm"


def _norm_words(cfg: ModelConfig) -> str:
    if cfg.norm == "rmsnorm":
        return ("RMSNorm: each position's C numbers divided by their root mean square, then a "
                "learned scale (no mean removed, no shift)")
    shift = "scale and shift" if cfg.bias else "scale (no shift: the model has no biases)"
    return ("LayerNorm: each position's C numbers scaled to mean 0, variance 1, then a learned "
            + shift)


def _mlp_words(cfg: ModelConfig) -> str:
    C, hidden = cfg.n_embd, cfg.mlp_hidden
    if cfg.activation == "swiglu":
        return (f"per position: SwiGLU, silu(gate) * up with two Linear C -> {hidden}, then "
                f"Linear {hidden} -> C (no mixing across positions)")
    act = {"relu2": "relu(x)^2", "gelu": "GELU (exact)",
           "gelu_tanh": "GELU (GPT-2's tanh approximation)"}[cfg.activation]
    return (f"per position: Linear C -> {4 * C}, {act}, Linear {4 * C} -> C (no mixing "
            "across positions)")


def _attention_words(cfg: ModelConfig) -> str:
    words = f"softmax(q k^T / sqrt({cfg.head_size})) with future positions masked"
    if cfg.qk_norm:
        words = "q and k RMS-normalised per head, " + words
    if cfg.positions == "rope":
        words = "q and k rotated by their positions (rotary), " + words
    return words + ": each row sums to 1"


def _block_stages(cfg: ModelConfig, layer: int, block: dict[str, torch.Tensor],
                  tokenizer: Tokenizer, ids: list[int], stages: _Stages) -> None:
    """One Transformer block: norm, attention, residual add, norm, MLP, add."""
    H, D = cfg.n_head, cfg.head_size
    b = f"block {layer}:"
    h, qkv, att, a = block["ln_1"], block["qkv"], block["weights"], block["attention"]
    T = h.size(1)
    stages.add(f"{b} ln_1", f"{_shape(h)} -> {_shape(h)}", _norm_words(cfg), h, _stats(h))
    stages.add(f"{b} q, k, v", f"{_shape(h)} -> 3 x (1, {H}, {T}, {D})",
               f"one Linear C -> 3C gives queries, keys and values, split into {H} heads of "
               f"{D} dims each", qkv)
    last = att[0, :, -1, :]  # (H, T): where the last position looks, per head
    looks = ", ".join(f"head {i} -> {tokenizer.decode([ids[int(j)]])!r}@{int(j)}"
                      for i, j in enumerate(last.argmax(dim=-1).tolist()))
    stages.add(f"{b} attention weights", f"{_shape(att)}",
               _attention_words(cfg), att, f"the last token looks most at: {looks}")
    stages.add(f"{b} attention output", f"{_shape(att)} @ v -> {_shape(a)}",
               "each position's weighted sum of values, heads concatenated back to C and "
               "mixed by c_proj", a, _stats(a))
    x = block["mid"]
    stages.add(f"{b} residual add", _shape(x),
               "x = x + attention(ln_1(x)): the block adds to the residual stream, it does "
               "not replace it", x, _stats(x))
    h = block["ln_2"]
    stages.add(f"{b} ln_2", _shape(h), f"another {_norm_name(cfg)}, before the MLP", h,
               _stats(h))
    m = block["mlp"]
    stages.add(f"{b} MLP", f"{_shape(h)} -> (1, {T}, {cfg.mlp_hidden}) -> {_shape(m)}",
               _mlp_words(cfg), m, _stats(m))
    x = block["out"]
    stages.add(f"{b} residual add", _shape(x), "x = x + mlp(ln_2(x))", x, _stats(x))


def _head_stages(cfg: ModelConfig, tokenizer: Tokenizer, trace: Trace, logits: torch.Tensor,
                 top: int, stages: _Stages) -> None:
    """The read-out: final norm, LM head, and the next token's probabilities."""
    x = trace.final
    assert x is not None
    stages.add(f"final {_norm_name(cfg)}", _shape(x), f"ln_f, one more {_norm_name(cfg)}, "
               "normalises the stream before the read-out", x, _stats(x))
    weight = ("sharing its weight with wte" if cfg.tie_embeddings
              else f"with its own ({cfg.vocab_size}, {cfg.n_embd}) weight (not tied to wte)")
    words = (f"a Linear C -> V {weight}: a score for each of the {cfg.vocab_size} tokens at "
             "every position")
    detail = ""
    if cfg.logit_softcap > 0:
        cap = f"{cfg.logit_softcap:g}"
        words += (f", then soft-capped: {cap} * tanh(score / {cap}) keeps every score inside "
                  f"+-{cap} (about unchanged when small)")
        detail = f"largest score {logits.abs().max().item():.2f} (the cap is {cap})"
    stages.add("LM head", f"{_shape(x)} -> {_shape(logits)}", words, logits, detail)
    probs = F.softmax(logits[0, -1].float(), dim=-1)
    p, i = probs.topk(min(top, probs.numel()))
    best = ", ".join(f"{tokenizer.decode([int(j)])!r} {float(q):.1%}"
                     for q, j in zip(p, i, strict=True))
    stages.add("softmax (next token)", f"{_shape(logits[0, -1])} -> {_shape(probs)}",
               "the last position's scores become probabilities for the token that comes "
               "next", probs, f"most likely: {best}")


def format_stages(stages: list[Stage]) -> str:
    """The stages as numbered text lines, for the terminal."""
    lines = []
    for n, s in enumerate(stages, 1):
        lines.append(f"{n:>3}. {s.name:<32} {s.shape}")
        lines.append(f"     {s.explanation}")
        if s.detail:
            lines.append(f"     {s.detail}")
    return "\n".join(lines)
