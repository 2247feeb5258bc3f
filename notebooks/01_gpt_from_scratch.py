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
# # 01 · A GPT from scratch, end to end
#
# From raw text to generated text, with gptscratch's own modules (nothing is copied into this
# notebook, so what you read here is what the `gptscratch` command runs):
#
# 1. **Data**: the built-in Shakespeare corpus, tokenized into characters.
# 2. **Batches**: random windows; the targets are the inputs shifted by one.
# 3. **Architecture**: the GPT, its shapes and its loss before training.
# 4. **Training loop**: ten lines written out, then the full trainer with checkpoints.
# 5. **Evaluation**: loss, perplexity, bits per byte, and samples.
# 6. **Pictures**: training curves, attention, the next-token distribution, embeddings, the
#    logit lens, and a memorisation check.
#
# It runs on a laptop CPU in a few minutes. Set `GPTSCRATCH_NOTEBOOK_SMALL=1` for a
# seconds-long version (what the test suite runs); the pictures are then of a barely trained
# model.

# %% tags=["parameters"]
import os

SMALL = os.environ.get("GPTSCRATCH_NOTEBOOK_SMALL") == "1"
OUT = "out/notebook-01"  # run directory for checkpoints, metrics and pictures

# %%
import math
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, display

import gptscratch
from gptscratch import api
from gptscratch.data.batches import get_batch
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT, lm_loss
from gptscratch.training.optimizer import lr_at

torch.manual_seed(0)
# Sizes: the small set only checks that every cell runs.
if SMALL:
    MODEL = dict(block_size=32, n_layer=2, n_head=2, n_embd=32)
    LOOP_STEPS, TRAIN = 30, dict(max_iters=60, eval_interval=30, eval_iters=2, log_interval=10,
                                 batch_size=8, warmup_iters=5, dtype="float32")
else:
    MODEL = dict(block_size=128, n_layer=4, n_head=4, n_embd=256)
    LOOP_STEPS, TRAIN = 200, dict(max_iters=1000, eval_interval=250, eval_iters=20,
                                  log_interval=50, batch_size=16, warmup_iters=100)

# %% [markdown]
# ## 1. Data
#
# `prepare` reads the corpus (38 plays as play scripts, fetched once and cached), holds out the
# last 10% for validation, builds a tokenizer and writes the ids to token files
# (`train-00000.bin`, `val-00000.bin`: a corpus of many gigabytes gets several shards).
# A character tokenizer is the simplest possible: one id per distinct character.

# %%
data = gptscratch.prepare("shakespeare", tokenizer="char")
tok = data.tokenizer
print({k: data.meta[k] for k in ("vocab_size", "train_tokens", "val_tokens", "source")})
train_ids = data.train_tokens()
print(repr(tok.decode(train_ids[:300].tolist())))

# %%
ids = tok.encode("ROMEO: Hello")
print(ids, "->", repr(tok.decode(ids)))

# %% [markdown]
# ## 2. Batches
#
# Training examples are random windows of `block_size + 1` tokens. The input `x` is the first
# `block_size`, the target `y` the last `block_size`: at every position the target is simply
# the next token, so one window holds `block_size` examples at once.

# %%
g = torch.Generator().manual_seed(0)
x, y = get_batch(train_ids, batch_size=4, block_size=MODEL["block_size"], generator=g)
print("x", tuple(x.shape), "y", tuple(y.shape))
print("x[0]:", repr(tok.decode(x[0, :24].tolist())))
print("y[0]:", repr(tok.decode(y[0, :24].tolist())))
assert torch.equal(x[0, 1:], y[0, :-1])  # y is x shifted by one

# %% [markdown]
# ## 3. Architecture
#
# Token embedding + position embedding, then a stack of blocks (LayerNorm → attention → add,
# LayerNorm → MLP → add), a final LayerNorm and a head that scores every vocabulary entry.
# See `src/gptscratch/model/gpt.py` and the guides in `docs/concepts/`.

# %%
config = ModelConfig(vocab_size=tok.vocab_size, **MODEL)
model = GPT(config)
print(model)
print(f"{model.num_params():,} parameters")

# %% [markdown]
# Before training the model should guess roughly uniformly, so the loss should be close to
# ln(vocabulary size): each of the V characters gets probability about 1/V.

# %%
logits = model(x)
print("logits", tuple(logits.shape), "(B, T, V)")
print(f"initial loss {lm_loss(logits, y).item():.3f} vs ln(V) = {math.log(tok.vocab_size):.3f}")

# %% [markdown]
# ## 4. The training loop, written out
#
# The heart of training is short: draw a batch, compute the loss, backpropagate, let AdamW
# take a step (here with the same warmup + cosine schedule `lr_at` the trainer uses).

# %%
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
losses = []
for step in range(LOOP_STEPS):
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, 3e-3, 3e-4, warmup=10, progress=step / LOOP_STEPS)
    xb, yb = get_batch(train_ids, 16, MODEL["block_size"], g)
    loss = lm_loss(model(xb), yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} after {LOOP_STEPS} steps")

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(losses)
ax.set(title="Training loss of the hand-written loop", xlabel="step", ylabel="loss")
plt.show()

# %% [markdown]
# The full trainer (`gptscratch.train`, the same as `gptscratch train`) adds what a real run
# needs: periodic evaluation on held-out text, mixed precision where it pays, gradient
# clipping, metrics in `metrics.jsonl`, and atomic checkpoints (`best/`, `latest/`) that can be
# resumed exactly. Its loop is the one above, in small functions: `train_step` in
# `src/gptscratch/training/loop.py` is one optimizer step, over the state that `set_up` in
# `training/setup.py` builds. It trains the `shakespeare-char-gpt2` preset: the GPT-2
# architecture this notebook builds (the default `shakespeare-char` adds the modern recipe of
# notebook 02, section 6).

# %%
result = gptscratch.train("shakespeare-char-gpt2", data=data.dir, out_dir=OUT,
                          overrides={**MODEL, **TRAIN, "max_time": 0})
print(result)

# %% [markdown]
# ## 5. Evaluation and samples
#
# Perplexity is exp(loss): how many characters the model is, in effect, choosing among. Bits
# per byte compares models with different tokenizers. Text generation (`gptscratch.generation`)
# encodes the prompt, hands its ids to the model's decoding loop (`model/decoding.py`, with a
# KV cache) and turns the sampled ids back into text; every setting is one field of a
# `GenerationConfig`.

# %%
ev = gptscratch.evaluate(OUT)
print(f"val loss {ev.loss:.3f}, perplexity {ev.perplexity:.2f}, bits/byte {ev.bits_per_byte:.3f}")
for temperature in (0.5, 1.0):
    text = gptscratch.generate(OUT, "ROMEO:", max_new_tokens=200, temperature=temperature,
                               seed=1)
    print(f"--- temperature {temperature} ---\nROMEO:{text}\n")

# %% [markdown]
# ## 6. Pictures of this model
#
# Every picture is also a command (`gptscratch viz curves|attention|next-token|embeddings|
# logit-lens`) and writes a PNG.

# %%
pics = Path(OUT) / "pictures"
display(Image(filename=api.plot_curves([OUT], pics / "curves.png")))

# %% [markdown]
# Attention: row = the token looking, column = the token looked at. Everything right of the
# diagonal is zero (the causal mask).

# %%
display(Image(filename=api.plot_attention(OUT, "ROMEO:\nWhat light", pics / "attention.png",
                                          layers=[0, MODEL["n_layer"] - 1]), width=900))

# %% [markdown]
# The next-token distribution, and what temperature 0.8 with top-k 10 and top-p 0.9 keep.

# %%
display(Image(filename=api.plot_next_token(OUT, "ROMEO:\nWhat li", pics / "next-token.png",
                                           temperature=0.8, top_k=10, top_p=0.9)))

# %%
display(Image(filename=api.plot_embeddings(OUT, pics / "embeddings.png")))

# %% [markdown]
# The logit lens: the output head applied after each block. The first row just predicts the
# input token itself (the output head *is* the token embedding, transposed); later rows show
# the prediction forming.

# %%
display(Image(filename=api.plot_logit_lens(OUT, "ROMEO:\nWhat light", pics / "lens.png")))

# %% [markdown]
# ## Does it create or copy?
#
# The longest span of a sample found verbatim in the training text, and the share of its
# 4-word phrases that appear there (`gptscratch sample --check-copy` prints the same).

# %%
index = api.corpus_index(OUT)
sample = gptscratch.generate(OUT, "\n", max_new_tokens=300, seed=2)
print(sample)
print(api.describe_copy(api.check_copy(index, sample)))
