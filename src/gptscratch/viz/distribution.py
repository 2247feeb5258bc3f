"""The next-token distribution for a prompt, and what the sampling settings do to it: the top
candidates as the model scores them (temperature 1, nothing cut) and as the sampler
(`model/sampling.py`, the one every generator uses) will draw them, cut tokens marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.model.config import SamplingConfig
from gptscratch.model.gpt import GPT
from gptscratch.model.sampling import filter_logits
from gptscratch.viz import canvas


@dataclass(frozen=True)
class NextTokenDistribution:
    """The data the next-token picture is drawn from: the top N candidates, most likely first."""

    tokens: list[str]  # (N,) candidate token texts
    ids: np.ndarray  # (N,) their ids
    model_probs: np.ndarray  # (N,) softmax of the raw logits (temperature 1)
    sample_probs: np.ndarray  # (N,) the probability the sampler draws each; 0 for cut tokens
    kept: np.ndarray  # (N,) bool, False where temperature / top-k / top-p cut the token
    n_kept: int  # how many tokens of the whole vocabulary the sampler can still draw
    sampling: SamplingConfig  # the settings applied


@torch.no_grad()
def next_token_distribution(model: GPT, tokenizer: Tokenizer, prompt: str,
                            sampling: SamplingConfig, top: int = 20) -> NextTokenDistribution:
    """Score the token after `prompt` and apply `sampling` the way the generator does."""
    idx, _ = canvas.encode_prompt(model, tokenizer, prompt)
    with canvas.eval_mode(model):
        logits = model(idx)[:, -1, :].float()  # (1, V)
    model_probs = F.softmax(logits, dim=-1)[0]
    if sampling.temperature == 0.0:
        # Greedy: the sampler takes the argmax, so only it survives (filter_logits would
        # divide by zero).
        sample_probs = torch.zeros_like(model_probs)
        sample_probs[model_probs.argmax()] = 1.0
    else:
        sample_probs = F.softmax(filter_logits(logits, sampling), dim=-1)[0]
    n = min(top, model_probs.numel())
    order = torch.argsort(model_probs, descending=True)[:n]
    ids = order.cpu().numpy()
    return NextTokenDistribution(
        tokens=[tokenizer.decode([int(i)]) for i in ids], ids=ids,
        model_probs=model_probs[order].cpu().numpy(),
        sample_probs=sample_probs[order].cpu().numpy(),
        kept=(sample_probs[order] > 0).cpu().numpy(),
        n_kept=int((sample_probs > 0).sum()), sampling=sampling)


def describe_sampling(s: SamplingConfig) -> str:
    """'temperature 0.8, top-k 10, top-p 0.9' (greedy for temperature 0)."""
    if s.temperature == 0.0:
        return "greedy (temperature 0)"
    parts = [f"temperature {s.temperature:g}"]
    if s.top_k is not None:
        parts.append(f"top-k {s.top_k}")
    if s.top_p < 1.0:
        parts.append(f"top-p {s.top_p:g}")
    return ", ".join(parts)


def plot_next_token(dist: NextTokenDistribution, out: str | Path, prompt: str = "") -> Path:
    """Draw the candidates as paired bars (model / sampler), cut ones in red; return the path."""
    n = len(dist.tokens)
    height = 0.34 * n + 2.2
    fig = canvas.new_figure(12.0, height)
    ax = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(left=0.12, right=0.97, top=1 - 0.95 / height, bottom=0.8 / height)
    y = np.arange(n)
    h = 0.4
    ax.barh(y - h / 2, dist.model_probs, height=h, color="#9e9e9e",
            label="model's probability (temperature 1, nothing cut)")
    colours = ["#1f77b4" if k else "#d62728" for k in dist.kept]
    ax.barh(y + h / 2, dist.sample_probs, height=h, color=colours,
            label=f"probability of being sampled ({describe_sampling(dist.sampling)})")
    top = float(max(dist.model_probs.max(), dist.sample_probs.max()))
    for i in range(n):
        p, q = float(dist.model_probs[i]), float(dist.sample_probs[i])
        ax.text(p + top * 0.01, i - h / 2, f"{p:.1%}", va="center", fontsize=8, color="#555")
        note = f"{q:.1%}" if dist.kept[i] else "cut"
        ax.text(q + top * 0.01, i + h / 2, note, va="center", fontsize=8,
                color="#1f77b4" if dist.kept[i] else "#d62728",
                fontweight="normal" if dist.kept[i] else "bold")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{canvas.token_label(t)}  ({i})"
                        for t, i in zip(dist.tokens, dist.ids, strict=True)],
                       fontsize=canvas.TICK_SIZE + 1)
    ax.invert_yaxis()  # most likely at the top
    ax.set_xlim(0, top * 1.15)
    canvas.style_axes(ax, f"{dist.n_kept} token(s) of the vocabulary can be sampled; red = cut",
                      "probability", "candidate next token (id)")
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.legend(fontsize=canvas.LABEL_SIZE - 1, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    shown = canvas.token_label(prompt[-40:]) if prompt else ""
    fig.suptitle(f"Next token after \"{shown}\": top {n} candidates", fontsize=canvas.TITLE_SIZE)
    return canvas.save_png(fig, out)
