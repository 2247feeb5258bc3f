"""Attention heatmaps: every layer's and head's attention weights for a prompt, as the model's
own forward computed them (its `Trace`). Row t is query t's distribution over keys 0..t; the
causal mask zeroes everything right of the diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.errors import UserError
from gptscratch.model.gpt import GPT, Trace
from gptscratch.viz import canvas

MAX_TOKENS = 64  # beyond this a token per tick row is no longer legible


@dataclass(frozen=True)
class AttentionMaps:
    """The data an attention picture is drawn from."""

    tokens: list[str]  # the T prompt tokens' text
    weights: np.ndarray  # (L, H, T, T) float32; [l, h, t] is query t's distribution over keys


@torch.no_grad()
def attention_maps(model: GPT, tokenizer: Tokenizer, prompt: str) -> AttentionMaps:
    """Run `prompt` through the model and keep every layer's attention weights."""
    idx, tokens = canvas.encode_prompt(model, tokenizer, prompt)
    trace = Trace()
    with canvas.eval_mode(model):  # no dropout on the weights
        model(idx, trace=trace)
    weights = torch.stack([b["weights"][0] for b in trace.blocks])  # (L, H, T, T)
    return AttentionMaps(tokens=tokens, weights=weights.float().cpu().numpy())


WHAT_TO_LOOK_FOR = (
    "What to look for: a bright line just left of the diagonal is a previous-token head; a "
    "bright column is a head fixed on one token (a name, a newline, or the first token, where "
    "heads rest when nothing else fits); an even spread along a row is a head averaging "
    "its context.")


def attention_figure_size(n_layers: int, n_heads: int, n_tokens: int) -> tuple[float, float]:
    """Inches: each head's panel grows with the prompt so every token label stays legible."""
    panel = min(9.0, max(3.2, 0.2 * n_tokens + 1.6))
    return n_heads * panel + 1.2, n_layers * panel + 1.3


def plot_attention(maps: AttentionMaps, out: str | Path, layers: list[int] | None = None) -> Path:
    """Draw one heatmap per (layer, head) of `layers` (0-based; None: all); return the PNG path."""
    n_layer, n_head, T, _ = maps.weights.shape
    if T > MAX_TOKENS:
        raise UserError(f"the prompt has {T} tokens; attention maps stay legible up to "
                        f"{MAX_TOKENS}: give a shorter --prompt")
    chosen = list(range(n_layer)) if layers is None else layers
    for layer in chosen:
        if not 0 <= layer < n_layer:
            raise UserError(f"layer {layer} does not exist; the model has layers 0..{n_layer - 1}")
    width, height = attention_figure_size(len(chosen), n_head, T)
    fig = canvas.new_figure(width, height)
    axes = fig.subplots(len(chosen), n_head, squeeze=False)
    tick = 9 if T <= 32 else 7
    image = None
    for row, layer in enumerate(chosen):
        for head in range(n_head):
            ax = axes[row, head]
            image = ax.imshow(maps.weights[layer, head], cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer}, head {head}", fontsize=canvas.LABEL_SIZE + 1)
            canvas.token_ticks(ax, maps.tokens, size=tick)
            if head == 0:
                ax.set_ylabel("query: the token looking", fontsize=canvas.LABEL_SIZE)
            if row == len(chosen) - 1:
                ax.set_xlabel("key: the token looked at", fontsize=canvas.LABEL_SIZE)
    fig.subplots_adjust(left=0.9 / width + 0.02, right=1 - 1.1 / width, bottom=0.6 / height + 0.05,
                        top=1 - 1.2 / height, wspace=0.35, hspace=0.35)
    cax = fig.add_axes((1 - 0.85 / width, 0.25, 0.2 / width, 0.5))
    assert image is not None  # at least one layer and one head were drawn
    bar = fig.colorbar(image, cax=cax)
    bar.set_label("attention weight (each row sums to 1)", fontsize=canvas.LABEL_SIZE)
    fig.suptitle("Attention weights: where each token looks (future positions are masked)",
                 fontsize=canvas.TITLE_SIZE)
    fig.text(0.5, 1 - 0.62 / height, WHAT_TO_LOOK_FOR, ha="center", va="top",
             fontsize=canvas.LABEL_SIZE, color="0.3", wrap=True)
    return canvas.save_png(fig, out)
