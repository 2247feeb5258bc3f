"""Token embeddings (`wte`, (V, C)) in 2D by PCA, which keeps the two directions along which
they vary most, and the cosine similarity of the position embeddings (`wpe`), usually a bright
diagonal band (docs/concepts/residuals-and-positions.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptscratch.data.token_files import is_prepared_dir, load_prepared
from gptscratch.data.tokenizers import Tokenizer
from gptscratch.model.gpt import GPT
from gptscratch.model.rotary import rotary_angles
from gptscratch.viz import canvas

DEFAULT_TOKENS = 120  # labels beyond this overlap into a blur
FIGSIZE = (17.0, 8.0)  # inches; 1700 x 800 pixels


@dataclass(frozen=True)
class EmbeddingPicture:
    """The data the embeddings picture is drawn from."""

    ids: np.ndarray  # (N,) the token ids shown
    tokens: list[str]  # their text
    coords: np.ndarray  # (N, 2) on the first two principal components of the whole (V, C) wte
    explained: np.ndarray  # (2,) fraction of the variance each component explains
    # (P, P) cosine similarity between position embeddings (rotary: between (cos, sin) angles)
    position_similarity: np.ndarray
    positions: str = "wpe"  # what the position panel shows, "wpe" or "rotary"


def frequent_token_ids(data_dir: str | Path, n: int) -> np.ndarray | None:
    """The n most frequent token ids of a prepared folder's training split (None if gone)."""
    if not is_prepared_dir(data_dir):
        return None
    prepared = load_prepared(data_dir)
    tokens, counts = prepared.train_tokens(), np.zeros(prepared.meta["vocab_size"], np.int64)
    for start in range(0, len(tokens), 10_000_000):  # a corpus of GBs, a piece at a time
        counts += np.bincount(np.asarray(tokens[start:start + 10_000_000]),
                              minlength=len(counts))[:len(counts)]
    return np.argsort(-counts, kind="stable")[:n]


@torch.no_grad()
def embedding_picture(model: GPT, tokenizer: Tokenizer,
                      token_ids: np.ndarray | None = None) -> EmbeddingPicture:
    """Project token embeddings to 2D with PCA and compare position embeddings; `token_ids`
    are the tokens to show (None: the first DEFAULT_TOKENS ids, all of a char vocabulary)."""
    wte = model.transformer.wte.weight.detach().float().cpu()  # (V, C)
    if model.transformer.wpe is not None:
        wpe = model.transformer.wpe.weight.detach().float().cpu()  # (P, C)
    else:  # rotary: a position's code is its angles; their similarity depends on p - s only
        cos, sin = rotary_angles(torch.arange(model.config.block_size), model.config.head_size)
        wpe = torch.cat([cos, sin], dim=-1)  # (P, D)
    centred = wte - wte.mean(dim=0)
    # PCA through the eigenvectors of the (C, C) covariance: cheap even for V = 50257.
    eigvals, eigvecs = torch.linalg.eigh(centred.T @ centred / max(1, wte.size(0) - 1))
    top = eigvecs[:, -2:].flip(-1)  # (C, 2), largest variance first
    explained = eigvals[-2:].flip(-1) / eigvals.sum().clamp_min(1e-12)
    if token_ids is None:
        token_ids = np.arange(min(DEFAULT_TOKENS, wte.size(0)))
    ids = np.asarray(token_ids, dtype=np.int64)
    coords = (centred[torch.from_numpy(ids)] @ top).numpy()
    unit = wpe / wpe.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return EmbeddingPicture(ids=ids, tokens=[tokenizer.decode([int(i)]) for i in ids],
                            coords=coords, explained=explained.numpy(),
                            position_similarity=(unit @ unit.T).numpy(),
                            positions="wpe" if model.transformer.wpe is not None else "rotary")


def plot_embeddings(pic: EmbeddingPicture, out: str | Path) -> Path:
    """Draw the labelled 2D token scatter and the position similarity matrix; return the path."""
    fig = canvas.new_figure(*FIGSIZE)
    ax_tok, ax_pos = fig.subplots(1, 2, gridspec_kw={"width_ratios": (1.25, 1)})
    fig.subplots_adjust(left=0.05, right=0.94, top=0.88, bottom=0.09, wspace=0.18)
    x, y = pic.coords[:, 0], pic.coords[:, 1]
    ax_tok.scatter(x, y, s=12, color="#1f77b4", alpha=0.5)
    for xi, yi, t in zip(x, y, pic.tokens, strict=True):
        ax_tok.annotate(canvas.token_label(t), (xi, yi), fontsize=10, ha="center", va="bottom",
                        xytext=(0, 2), textcoords="offset points")
    ax_tok.grid(alpha=0.3)
    canvas.style_axes(ax_tok, f"Token embeddings (wte), {len(pic.ids)} tokens, PCA to 2D",
                      f"principal component 1 ({pic.explained[0]:.0%} of variance)",
                      f"principal component 2 ({pic.explained[1]:.0%} of variance)")
    image = ax_pos.imshow(pic.position_similarity, cmap="RdBu_r", vmin=-1, vmax=1)
    canvas.style_axes(ax_pos, f"Position embeddings ({pic.positions}): cosine similarity",
                      "position", "position")
    bar = fig.colorbar(image, ax=ax_pos, fraction=0.046, pad=0.04)
    bar.set_label("cosine similarity", fontsize=canvas.LABEL_SIZE)
    fig.suptitle("What the embeddings learned: tokens used alike sit close together",
                 fontsize=canvas.TITLE_SIZE)
    return canvas.save_png(fig, out)
