# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · The concepts in detail
#
# Self-attention built up by hand (one head, the causal mask, softmax, then many heads as a
# reshape), each piece checked numerically against gptscratch's own module; layer
# normalisation against batch normalisation on real activations; the hyperparameters that
# matter, with a small learning-rate sweep; and what the "modern recipe" changed since GPT-2
# (rotary positions, RMSNorm, Muon), ending with a tiny GPT-2 and a tiny modern model trained
# side by side and the benchmark's measure of each change. The guides in `docs/concepts/` say
# the same in prose, with links to the code.
#
# `GPTSCRATCH_NOTEBOOK_SMALL=1` makes it run in seconds (the test suite does this).

# %% tags=["parameters"]
import os

SMALL = os.environ.get("GPTSCRATCH_NOTEBOOK_SMALL") == "1"
OUT = "out/notebook-02"

# %%
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import Image, display

import gptscratch
from gptscratch import api
from gptscratch.data.batches import get_batch
from gptscratch.model.attention import explicit_attention
from gptscratch.model.gpt import Trace
from gptscratch.model.layers import LayerNorm, RMSNorm
from gptscratch.model.rotary import apply_rotary, rotary_angles
from gptscratch.training.muon import NS_COEFFICIENTS, newton_schulz
from gptscratch.training.optimizer import lr_at
from gptscratch.viz.curves import load_curves

torch.manual_seed(0)
if SMALL:
    MODEL = dict(block_size=32, n_layer=2, n_head=2, n_embd=32)
    TRAIN = dict(max_iters=40, eval_interval=20, eval_iters=2, log_interval=10, batch_size=8,
                 warmup_iters=5, dtype="float32")
    SWEEP = dict(max_iters=20, eval_interval=10, eval_iters=2, log_interval=5, batch_size=8,
                 warmup_iters=2, dtype="float32")
    RACE = dict(max_iters=60, eval_interval=30, eval_iters=4, log_interval=5, batch_size=8,
                warmup_iters=10, dtype="float32")
else:
    MODEL = dict(block_size=64, n_layer=4, n_head=4, n_embd=128)
    TRAIN = dict(max_iters=800, eval_interval=200, eval_iters=10, log_interval=50,
                 batch_size=16, warmup_iters=50)
    SWEEP = dict(max_iters=200, eval_interval=50, eval_iters=5, log_interval=25, batch_size=16,
                 warmup_iters=20)
    RACE = dict(max_iters=400, eval_interval=100, eval_iters=10, log_interval=10,
                batch_size=16, warmup_iters=40)
# Section 6's side by side: one tiny shape for a GPT-2-style and a modern model.
TINY = dict(block_size=64, n_layer=2, n_head=4, n_embd=64)

# %% [markdown]
# A small model trained on the built-in Shakespeare gives real weights and activations to look
# at (a minute on a laptop CPU; seconds in the small size). Sections 1 to 5 take apart GPT-2's
# architecture, so the model is the `shakespeare-char-gpt2` preset's (learned positions,
# LayerNorm, GELU, AdamW); section 6 shows what the modern recipe of `shakespeare-char`
# changes.

# %%
data = gptscratch.prepare("shakespeare", tokenizer="char")
gptscratch.train("shakespeare-char-gpt2", data=data.dir, out_dir=OUT,
                      overrides={**MODEL, **TRAIN, "max_time": 0})
loaded = gptscratch.load(OUT, device="cpu")
model, tok = loaded.model, loaded.tokenizer
C, H = model.config.n_embd, model.config.n_head
D = C // H
block = model.transformer.blocks()[0]

prompt = "ROMEO:\nWhat light"
idx = torch.tensor([tok.encode(prompt)])  # (1, T)
T = idx.size(1)
with torch.no_grad():
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(T))  # (1, T, C)
    h = block.ln_1(x)  # what the first attention layer sees
print(f"C={C} channels, H={H} heads of D={D}; prompt of T={T} tokens; h: {tuple(h.shape)}")

# %% [markdown]
# ## 1. One attention head, by hand
#
# `c_attn` is one Linear layer C → 3C: its output holds the queries, keys and values of all
# heads side by side. Head 0's query uses output columns 0..D-1, its key columns C..C+D-1 and
# its value columns 2C..2C+D-1. So head 0 is three small matrix products:

# %%
W, b = block.attn.c_attn.weight, block.attn.c_attn.bias  # W: (3C, C)


def project(rows: slice) -> torch.Tensor:
    out = h[0] @ W[rows].T  # (T, C) @ (C, D) -> (T, D)
    return out + b[rows] if b is not None else out


with torch.no_grad():
    q0 = project(slice(0, D))
    k0 = project(slice(C, C + D))
    v0 = project(slice(2 * C, 2 * C + D))
    scores = q0 @ k0.T / math.sqrt(D)  # (T, T): how well query t matches key s
print("q, k, v of head 0:", tuple(q0.shape), "scores:", tuple(scores.shape))

# %% [markdown]
# **Why divide by √D?** With unit-variance entries, a dot product of two D-long vectors has
# variance D. Unscaled, scores grow with the head size and the softmax turns nearly one-hot,
# with vanishing gradients. Random vectors show it:

# %%
a, b_ = torch.randn(10_000, D), torch.randn(10_000, D)
dots = (a * b_).sum(-1)
print(f"variance of q·k: {dots.var():.1f} (D = {D}); of q·k/sqrt(D): {(dots / math.sqrt(D)).var():.2f}")

# %% [markdown]
# ## 2. The causal mask and the softmax
#
# Position t may only look at positions ≤ t. Setting the scores above the diagonal to −∞
# makes their softmax weight exactly 0; the softmax then turns each row into weights that sum
# to 1.

# %%
causal = torch.ones(T, T, dtype=torch.bool).tril()
masked = scores.masked_fill(~causal, float("-inf"))
weights = F.softmax(masked, dim=-1)
labels = [repr(c)[1:-1] if c != " " else "␣" for c in prompt]

fig, axes = plt.subplots(1, 3, figsize=(16, 5))
for ax, m, title in zip(axes, (scores, masked, weights),
                        ("scores q·k/√D", "masked (future = −∞)", "softmax: attention weights")):
    im = ax.imshow(m.detach().clamp(min=-10), cmap="viridis")
    ax.set_title(title)
    ax.set_xticks(range(T), labels)
    ax.set_yticks(range(T), labels)
    ax.set_xlabel("key (looked at)")
    ax.set_ylabel("query (looking)")
    fig.colorbar(im, ax=ax, fraction=0.046)
plt.tight_layout()
plt.show()
print("row sums:", weights.sum(-1)[:5].tolist(), "...")

# %% [markdown]
# The head's output is the weighted sum of the values. Now check every hand-built piece
# against gptscratch: `explicit_attention` (the written-out path of the model) and the
# weights the model itself reports.

# %%
with torch.no_grad():
    y0 = weights @ v0  # (T, D)
    y_ref, att_ref = explicit_attention(q0[None, None], k0[None, None], v0[None, None])
    trace = Trace()  # what the model's own forward computed, kept
    model(idx, trace=trace)
    maps = [block["weights"] for block in trace.blocks]
print("max |difference| of weights vs explicit_attention:",
      (weights - att_ref[0, 0]).abs().max().item())
print("max |difference| of weights vs the model's layer 0, head 0:",
      (weights - maps[0][0, 0]).abs().max().item())
print("max |difference| of output vs explicit_attention:", (y0 - y_ref[0, 0]).abs().max().item())
assert torch.allclose(weights, maps[0][0, 0], atol=1e-5)
assert torch.allclose(y0, y_ref[0, 0], atol=1e-5)

# %% [markdown]
# ## 3. Many heads are a reshape
#
# No loop over heads: compute q, k, v for all heads at once (B, T, C), view the channels as
# (H, D) and move the head axis next to the batch axis, (B, T, C) → (B, T, H, D) → (B, H, T, D).
# The same attention code then runs on every head in parallel. Afterwards the inverse
# reshape puts the heads side by side again, and `c_proj` mixes them.

# %%
with torch.no_grad():
    q, k, v = block.attn.c_attn(h).split(C, dim=2)  # 3 x (1, T, C)
    q, k, v = (t.view(1, T, H, D).transpose(1, 2) for t in (q, k, v))  # 3 x (1, H, T, D)
    s = q @ k.transpose(-2, -1) / math.sqrt(D)  # (1, H, T, T)
    att = F.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)
    y = (att @ v).transpose(1, 2).reshape(1, T, C)  # (1, H, T, D) -> (1, T, H, D) -> (1, T, C)
    mine = block.attn.c_proj(y)
    theirs = block.attn(h)  # gptscratch's CausalSelfAttention (fused kernel path)
print("head 0 of the reshape equals the hand-built head:",
      torch.allclose(att[0, 0], weights, atol=1e-6))
print("max |difference| vs CausalSelfAttention:", (mine - theirs).abs().max().item())
assert torch.allclose(mine, theirs, atol=1e-5)

# %% [markdown]
# The model's own attention pictures (`gptscratch viz attention`): every layer and head.

# %%
display(Image(filename=api.plot_attention(loaded, prompt, f"{OUT}/attention.png"),
              width=900))

# %% [markdown]
# ## 4. Layer normalisation versus batch normalisation, on real activations
#
# Take the residual stream after the first block for a batch of real text: activations of
# shape (B, T, C). **LayerNorm** normalises each token's C numbers on their own; **BatchNorm**
# normalises each channel across all B·T tokens of the batch.

# %%
g = torch.Generator().manual_seed(0)
xb, _ = get_batch(data.train_tokens(), 16, model.config.block_size, g)
with torch.no_grad():
    act = block(model.transformer.wte(xb) + model.transformer.wpe(torch.arange(xb.size(1))))
B_, T_, _ = act.shape
flat = act.reshape(-1, C)  # (B*T, C)

layer_norm = (flat - flat.mean(-1, keepdim=True)) / torch.sqrt(flat.var(-1, unbiased=False,
                                                                          keepdim=True) + 1e-5)
batch_norm = (flat - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + 1e-5)
# Our hand-written LayerNorm equals torch's (and gptscratch's LayerNorm with weight 1, bias 0).
assert torch.allclose(layer_norm, F.layer_norm(flat, (C,)), atol=1e-4)

fig, axes = plt.subplots(1, 3, figsize=(16, 4))
token_std = {"raw": flat.std(-1), "LayerNorm": layer_norm.std(-1),
             "BatchNorm": batch_norm.std(-1)}
channel_mean = {"raw": flat.mean(0), "LayerNorm": layer_norm.mean(0),
                "BatchNorm": batch_norm.mean(0)}
for ax, values in ((axes[0], token_std), (axes[1], channel_mean)):
    # Shared bins, so a distribution squeezed to one value shows as one tall bar.
    lo = min(v.min().item() for v in values.values())
    hi = max(v.max().item() for v in values.values())
    bins = torch.linspace(lo - 0.05, hi + 0.05, 50).tolist()
    for name, v in values.items():
        ax.hist(v.tolist(), bins=bins, alpha=0.6, label=name)
    ax.set_yscale("log")
axes[0].set(title="std of each token's C values", xlabel="std", ylabel="tokens (log scale)")
axes[1].set(title="mean of each channel over the batch", xlabel="mean",
            ylabel="channels (log scale)")
axes[2].plot(flat.std(0).sort().values, label="raw")
axes[2].set(title="channel scales of the raw stream (sorted)", xlabel="channel rank",
            ylabel="std over the batch")
for ax in axes[:2]:
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# LayerNorm gives every token unit scale (left: one tall bar at 1) but leaves channels with
# their own means; BatchNorm centres every channel (middle: one tall bar at 0) but leaves
# tokens at varying scales. The
# decisive difference: with BatchNorm a token's output depends on **the other sequences in
# the batch**. Normalise the same first sequence inside two different batches:

# %%
first = act[0]  # (T, C): one sequence
batch_a, batch_b = act[:8], torch.cat([act[:1], act[8:15]])  # two batches that both hold it


def bn(batch: torch.Tensor) -> torch.Tensor:
    """BatchNorm of `first` with the statistics of `batch` (B, T, C)."""
    stats = batch.reshape(-1, C)
    return (first - stats.mean(0)) / torch.sqrt(stats.var(0, unbiased=False) + 1e-5)


ln_a = F.layer_norm(batch_a, (C,))[0]
ln_b = F.layer_norm(batch_b, (C,))[0]
print("LayerNorm: max |diff| of the sequence's output between the two batches =",
      (ln_a - ln_b).abs().max().item())
print("BatchNorm: max |diff| of the sequence's output between the two batches =",
      (bn(batch_a) - bn(batch_b)).abs().max().item())
assert torch.equal(ln_a, ln_b)

# %% [markdown]
# That is why GPTs use LayerNorm: generation runs one sequence at a time, and statistics over
# positions would leak future tokens into earlier ones.
#
# ## 5. Hyperparameters and optimisation
#
# The learning rate follows a schedule: linear warmup (Adam's moment estimates are noisy at
# first, so early steps are kept small), then cosine decay to a floor. This is gptscratch's
# `lr_at`, the function the trainer calls every step:

# %%
steps = 1000
lrs = [lr_at(s, 3e-3, 3e-4, warmup=100, progress=s / steps) for s in range(steps)]
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(lrs)
ax.set(title="lr_at: warmup 100 steps, cosine decay 3e-3 → 3e-4", xlabel="step",
       ylabel="learning rate")
plt.show()

# %% [markdown]
# The learning rate is the hyperparameter to tune first. A small sweep: the same model and
# data at three peak learning rates, compared on one picture (`gptscratch viz curves`). Too
# low crawls; too high is noisy or diverges.

# %%
runs = []
for lr in (3e-4, 3e-3, 3e-2):
    run = f"{OUT}-lr{lr:g}"
    gptscratch.train("shakespeare-char-gpt2", data=data.dir, out_dir=run,
                          overrides={**MODEL, **SWEEP, "learning_rate": lr, "min_lr": lr / 10,
                                     "max_time": 0})
    runs.append(run)
display(Image(filename=api.plot_curves(runs, f"{OUT}/lr-sweep.png")))

# %% [markdown]
# Other levers, roughly in order of impact: model size against data size (a big model on 5 MB
# memorises: watch the val loss rise and check samples with `gptscratch sample --check-copy`);
# context length `block_size` (attention's cost grows with its square); batch size (bigger is
# smoother but fewer updates per second on a CPU); dropout (only helps once the model can
# overfit); weight decay and gradient clipping (stability). `gptscratch train --help` lists
# every knob.

# %% [markdown]
# ## 6. The modern recipe
#
# Models trained since GPT-2 keep its shape and change single pieces: rotary positions,
# RMSNorm, QK-norm, ReLU² or SwiGLU, an untied head, zero-initialised projections, soft-capped
# logits, the Muon optimizer. `docs/concepts/modern-recipe.md` explains each one and where it
# lives in the code. Here are three of them up close, then all of them at work.
#
# **Rotary positions** turn each query and key by an angle proportional to its position
# (channel pair j by `p · θ_j`) instead of adding a position vector. The score of a query at
# position m against a key at position n then depends on m − n only. Place one unit vector at
# every position as both query and key, turn each copy with gptscratch's `rotary_angles` and
# `apply_rotary`, and compare every pair:

# %%
P, D_rot = 48, 64
unit = F.normalize(torch.randn(D_rot, generator=torch.Generator().manual_seed(0)), dim=0)


def turned(vector: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """`vector` (D,) placed at each of `positions` (P,) and turned by rotary: (P, D)."""
    cos, sin = rotary_angles(positions, vector.numel())  # (P, D/2) each
    return apply_rotary(vector.expand(1, 1, positions.numel(), -1), cos, sin)[0, 0]


pos = torch.arange(P)
rot_scores = turned(unit, pos) @ turned(unit, pos).T  # (P, P): query at m, key at n
later = turned(unit, pos + 1000) @ turned(unit, pos + 1000).T  # every position moved by 1000

fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
im = axes[0].imshow(rot_scores.masked_fill(~torch.ones(P, P, dtype=torch.bool).tril(),
                                           float("nan")), cmap="viridis")
axes[0].set(title="q·k of the same vector, turned by rotary", xlabel="key position n",
            ylabel="query position m")
fig.colorbar(im, ax=axes[0], fraction=0.046)
for m, style in ((P - 1, "-"), (30, "--"), (12, ":")):
    axes[1].plot(m - pos[: m + 1], rot_scores[m, : m + 1], style, label=f"query at m = {m}")
axes[1].set(title="the same scores against the distance m − n", xlabel="distance m − n",
            ylabel="q·k")
axes[1].legend()
plt.tight_layout()
plt.show()
print("max |difference| of the scores when every position moves by 1000:",
      (rot_scores - later).abs().max().item())
assert torch.allclose(rot_scores, later, atol=1e-3)  # fp32 angles near 1000 round a little

# %% [markdown]
# Every diagonal of the left picture is constant, and on the right the three queries' curves
# lie on one another: the score is a function of the distance. (It also fades, unevenly, as
# the distance grows: the fast-turning channel pairs soon stop agreeing.) Moving every token
# by the same offset changes nothing, which is why generation can slide its window and
# re-read the kept tokens from position 0. (With learned positions, x + wpe[m], a moved token
# becomes a different vector.)
#
# **RMSNorm** is LayerNorm without the mean: y = x / √(mean(x²) + ε) · weight, no bias. On
# one token's residual stream from section 4, through gptscratch's two layers (their gains
# start at 1, so this is the normalisation alone):

# %%
one = act[0, -1]  # (C,): the last token of the first sequence, after block 0
with torch.no_grad():
    as_ln, as_rms = LayerNorm(C, bias=False)(one), RMSNorm(C)(one)
for name, vec in (("input", one), ("LayerNorm", as_ln), ("RMSNorm", as_rms)):
    print(f"{name:>9}: mean {vec.mean().item():+.3f}   std {vec.std(unbiased=False).item():.3f}"
          f"   root mean square {vec.square().mean().sqrt().item():.3f}")
assert torch.allclose(as_rms, one / torch.sqrt(one.square().mean() + 1e-5), atol=1e-5)
centred = one - one.mean()
with torch.no_grad():
    same = (LayerNorm(C, bias=False)(centred) - RMSNorm(C)(centred)).abs().max().item()
print("for the same vector with its mean removed, max |LayerNorm - RMSNorm| =", same)
assert same < 1e-5

# %% [markdown]
# LayerNorm's output has mean 0 and standard deviation 1; RMSNorm's has root mean square 1 and
# keeps the input's mean (scaled). For a vector whose mean is already zero they agree: the
# re-centring is the only difference, and Zhang & Sennrich (2019) found the network did not
# need it.
#
# **Muon** replaces each block matrix's (momentum of the) gradient by the nearest
# semi-orthogonal matrix: the same singular vectors, every singular value about 1. It gets
# there with `newton_schulz`, five steps of X ← aX + b(XXᵀ)X + c(XXᵀ)²X, which move every
# singular value s to as + bs³ + cs⁵ and leave the singular vectors alone. A gradient-like
# matrix with a few strong directions on top of weak noise, before and after:

# %%
gen = torch.Generator().manual_seed(0)
grad = (torch.randn(128, 4, generator=gen) @ torch.randn(4, 512, generator=gen)  # 4 strong
        + 0.5 * torch.randn(128, 512, generator=gen))  # weak noise in every direction
ortho = newton_schulz(grad)  # (128, 512), float32 on a CPU
U, S, Vh = torch.linalg.svd(grad, full_matrices=False)  # grad = U diag(S) Vh
core = U.T @ ortho @ Vh.T  # (128, 128): diagonal if ortho has grad's singular vectors
after = core.diagonal()
print(f"singular values before: {S.min().item():.1f} to {S.max().item():.1f}; "
      f"after: {after.min().item():.2f} to {after.max().item():.2f}")
print("largest off-diagonal |U^T ortho V| (0 when the singular vectors are kept):",
      (core - torch.diag(after)).abs().max().item())

s0 = torch.logspace(-4, 0, 200)  # singular values after the scaling by the Frobenius norm
s = s0.clone()
na, nb, nc = NS_COEFFICIENTS  # a, b, c of the iteration
for _ in range(5):
    s = na * s + nb * s**3 + nc * s**5

fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
axes[0].semilogy(S, "o", ms=3, label="gradient")
axes[0].semilogy(after, "o", ms=3, label="newton_schulz(gradient)")
axes[0].set(title="singular values, largest first", xlabel="index", ylabel="singular value")
axes[0].legend()
axes[1].semilogx(s0, s)
axes[1].axhline(1.0, color="grey", lw=0.8)
axes[1].set(title="five Newton–Schulz steps on one singular value",
            xlabel="singular value / Frobenius norm (before)", ylabel="after")
plt.tight_layout()
plt.show()

# %% [markdown]
# Four directions dwarf the rest before; afterwards every direction gets a step of about the
# same size, so the weak ones learn as fast as the strong ones. The right picture is the
# polynomial at work: anything from a few thousandths of the norm up lands in a band around 1
# (not exactly 1: the coefficients trade that for speed, and training does not mind).
#
# **All together.** Two presets: `shakespeare-char-gpt2` (GPT-2's architecture, AdamW) and
# `shakespeare-char-modern`, the same as the default `shakespeare-char` (rotary positions,
# RMSNorm, QK-norm, ReLU², zero-initialised projections, soft-capped logits and Muon on
# top). Here they share one tiny shape and train the same number of steps on the same
# batches (the same seed):

# %%
races = {}
for preset in ("shakespeare-char-gpt2", "shakespeare-char-modern"):
    run = f"{OUT}-{preset.removeprefix('shakespeare-char-')}"
    result = gptscratch.train(preset, data=data.dir, out_dir=run,
                              overrides={**TINY, **RACE, "seed": 1, "eval_sample_tokens": 0,
                                         "max_time": 0})
    races[preset] = load_curves(run)
    print(f"{preset:>24}: after {result.step} steps, train loss {result.train_loss:.3f}, "
          f"val loss {result.val_loss:.3f}")

fig, ax = plt.subplots(figsize=(8, 4))
for preset, curves in races.items():
    logged = curves.loss  # (step, mean training loss) per log interval
    line, = ax.plot([s for s, _ in logged], [v for _, v in logged], label=f"{preset} (train)")
    ax.plot([s for s, _ in curves.val_loss], [v for _, v in curves.val_loss], "o",
            color=line.get_color(), label=f"{preset} (val)")
ax.set(title="the same tiny shape, two recipes", xlabel="step", ylabel="loss")
ax.legend()
plt.show()

# %% [markdown]
# A few steps of a tiny model are a glimpse, not a measurement: the gap this early says
# little about the gap after minutes of training, and it counts steps, not time. On a CPU a
# Muon step costs more time than an AdamW step (Newton–Schulz adds about 5·m/B of the blocks'
# work, m a matrix's smaller side and B the tokens per step, which is large at a small batch).
# What each change is worth in the same time budget, each alone and all together, is measured
# by `python benchmarks/recipe.py` (its docstring says how to run it), which keeps its results
# in the repository, `benchmarks/results/recipe.json`. Here they are: each row trained the
# preset's shape for 270 s of a 2-core CPU and was scored on the whole validation split of
# tinyshakespeare; the bar is its loss minus GPT-2's (left of zero: better). Why each change
# should help, and what it costs, is in `docs/concepts/modern-recipe.md`.

# %%
# The repository's results: the README's editable install keeps the package in src/, beside
# benchmarks/ (a package installed elsewhere has no copy: see docs/benchmarks.md instead).
RECIPE = Path(gptscratch.__file__).resolve().parents[2] / "benchmarks/results/recipe.json"
if RECIPE.is_file():
    losses: dict[str, list[float]] = {}
    for r in json.loads(RECIPE.read_text())["runs"]:
        if r["corpus"] == "tinyshakespeare" and r["max_time"] == 270.0:
            losses.setdefault(r["row"], []).append(r["val_loss"])
    mean = {row: sum(v) / len(v) for row, v in losses.items()}
    rows = sorted((row for row in mean if row != "gpt2"), key=mean.get, reverse=True)
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.2))
    ax.barh(rows, [mean[row] - mean["gpt2"] for row in rows],
            color=["tab:green" if row == "all" else "tab:blue" for row in rows])
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set(title=f"val loss against GPT-2's architecture ({mean['gpt2']:.3f}), 270 s each",
           xlabel="val loss − GPT-2's (lower is better)")
    plt.tight_layout()
    plt.show()
    for row in rows:
        print(f"{row:>10}: {mean[row]:.4f} over {len(losses[row])} seed(s)")
else:
    print(f"{RECIPE} is not here; the table is in docs/benchmarks.md")

# %% [markdown]
# To compare the two presets at full size yourself, train `shakespeare-char-gpt2` and
# `shakespeare-char-modern` with `gptscratch train --preset NAME --data shakespeare --out
# out/NAME`, then draw both with
# `gptscratch viz curves --runs out/shakespeare-char-gpt2 out/shakespeare-char-modern`.

# %% [markdown]
# ## Chat fine-tuning: the loss on the answers only
#
# `gptscratch train --sft` teaches a pretrained model to answer
# ([guide](../docs/concepts/chat-fine-tuning.md)). A conversation is written with four turn
# markers, special tokens added after the tokenizer's vocabulary, and only the assistant's
# tokens (and the `<|end|>` that closes its turn) are training targets. Here is one
# conversation through the chat template, with its targets in brackets:

# %%
from gptscratch.data.conversations import Message
from gptscratch.data.tokenizers import CharTokenizer, chat_template_of, with_chat_template

chat_tok = with_chat_template(CharTokenizer.from_text("ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                      "abcdefghijklmnopqrstuvwxyz ?,:\n"))
template = chat_template_of(chat_tok)
conversation = [Message("user", "Who is speaking here?\n\nNURSE:\nGood morrow, lords"),
                Message("assistant", "NURSE")]
ids, targets = template.render(chat_tok, conversation)  # (N,) int64 ids, (N,) bool mask
print("".join(f"[{chat_tok.decode([i])}]" if t else chat_tok.decode([i])
              for i, t in zip(ids.tolist(), targets.tolist(), strict=True)))
print(f"{len(ids)} ids, {int(targets.sum())} of them targets; the markers are ids "
      f"{template.first_id}..{template.end_id}, after the {chat_tok.base.vocab_size} characters")

# %% [markdown]
# The question and the passage are read (they are the input) but never predicted: in training
# their targets are -1, which the cross-entropy skips, so all of the gradient goes to the
# answer and to stopping after it. `<|assistant|>` is no target either: at generation time the
# prompt ends with it (`template.prompt_ids`), and the model writes from there to `<|end|>`.
