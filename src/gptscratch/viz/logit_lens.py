"""The logit lens (nostalgebraist 2020): what the model would predict if it stopped after each
layer. The model's own read-out, lm_head(ln_f(x)), is applied to the residual stream after the
embeddings and after every block; the last row is the model's real output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.errors import UserError
from gptscratch.model.gpt import GPT, Trace
from gptscratch.viz import canvas

MAX_TOKENS = 48


@dataclass(frozen=True)
class LogitLens:
    """The data the logit-lens picture is drawn from (R = n_layer + 1 rows)."""

    tokens: list[str]  # the T input tokens' text
    ids: np.ndarray  # (T,) their ids
    stages: list[str]  # R row names: "embeddings", then "after block 0" ...
    top_ids: np.ndarray  # (R, T) the most likely next token at each stage and position
    top_tokens: list[list[str]]  # (R, T) its text
    top_probs: np.ndarray  # (R, T) its probability
    next_probs: np.ndarray  # (R, T - 1) the probability given to the prompt's true next token


@torch.no_grad()
def logit_lens(model: GPT, tokenizer: Tokenizer, prompt: str) -> LogitLens:
    """Decode the residual stream after the embeddings and after every block."""
    idx, tokens = canvas.encode_prompt(model, tokenizer, prompt)
    trace = Trace()
    with canvas.eval_mode(model):  # the read-out too: a LoRA lm_head has dropout
        model(idx, trace=trace)
        streams = trace.streams()  # after the embeddings and after every block
        # The same read-out the model uses at the end, applied to every stage: (R, T, V).
        probs = torch.stack([F.softmax(model.logits(model.transformer.ln_f(s))[0].float(), -1)
                             for s in streams])
    top_probs, top_ids = probs.max(dim=-1)  # (R, T)
    next_ids = idx[0, 1:]  # (T - 1,)
    next_probs = probs[:, :-1, :].gather(-1, next_ids.view(1, -1, 1).expand(len(streams), -1, 1))
    ids = top_ids.cpu().numpy()
    return LogitLens(
        tokens=tokens, ids=idx[0].cpu().numpy(),
        stages=["embeddings"] + [f"after block {i}" for i in range(len(streams) - 1)],
        top_ids=ids, top_tokens=[[tokenizer.decode([int(i)]) for i in row] for row in ids],
        top_probs=top_probs.cpu().numpy(), next_probs=next_probs[..., 0].cpu().numpy())


def plot_logit_lens(lens: LogitLens, out: str | Path) -> Path:
    """Draw a (stage x position) grid: each cell the top prediction and its probability."""
    R, T = lens.top_probs.shape
    if T > MAX_TOKENS:
        raise UserError(f"the prompt has {T} tokens; the logit lens stays legible up to "
                        f"{MAX_TOKENS}: give a shorter --prompt")
    width, height = 0.62 * T + 4.0, 0.55 * R + 2.3
    fig = canvas.new_figure(width, height)
    ax = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(left=2.0 / width, right=1 - 1.6 / width, top=1 - 1.35 / height,
                        bottom=0.85 / height)
    image = ax.imshow(lens.top_probs, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for r in range(R):
        for t in range(T):
            p = float(lens.top_probs[r, t])
            hit = t + 1 < T and lens.top_ids[r, t] == lens.ids[t + 1]
            ax.text(t, r, canvas.token_label(lens.top_tokens[r][t]), ha="center", va="center",
                    fontsize=10, color="white" if p > 0.55 else "black",
                    fontweight="bold" if hit else "normal")
    canvas.token_ticks(ax, lens.tokens, axis="x", size=10)
    ax.set_yticks(range(R))
    ax.set_yticklabels(lens.stages[:-1] + [f"{lens.stages[-1]}\n(model output)"], fontsize=10)
    canvas.style_axes(ax, "", "input token at each position", "residual stream read after")
    # The true next token above each column, to compare the predictions with.
    top_axis = ax.secondary_xaxis("top")
    canvas.token_ticks(top_axis, lens.tokens[1:] + ["?"], axis="x", size=10)
    top_axis.set_xlabel("true next token (bold cell = predicted it)", fontsize=canvas.LABEL_SIZE)
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label("probability of the top token", fontsize=canvas.LABEL_SIZE)
    fig.suptitle("Logit lens: each layer's best guess for the next token",
                 fontsize=canvas.TITLE_SIZE)
    return canvas.save_png(fig, out)
