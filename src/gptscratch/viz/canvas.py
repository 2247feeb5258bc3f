"""What every picture shares: the prompt run through the model in eval mode, a headless
matplotlib figure, legible token labels, and an atomic PNG write (no partial file on failure).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gptscratch.errors import UserError
from gptscratch.files import atomic_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gptscratch.data.tokenizers import Tokenizer
    from gptscratch.model.gpt import GPT

# Every picture is drawn at this resolution, so its pixel size is its figsize in inches x DPI.
DPI = 100
TITLE_SIZE = 14
LABEL_SIZE = 11
TICK_SIZE = 9

# Characters that would be invisible or break a tick label, shown as visible symbols.
_VISIBLE = {"\n": "\\n", "\t": "\\t", "\r": "\\r", " ": "\u2423"}


def token_label(text: str) -> str:
    """A token's text as a tick label a person can see: '\\n' for a newline, '␣' for a space."""
    if text == "":
        return "''"
    shown = "".join(_VISIBLE.get(ch, ch) for ch in text)
    # mathtext would read a '$' pair as a formula.
    return shown.replace("$", r"\$")


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches on the Agg canvas (no display needed), built
    without pyplot so no global state (open figures, the backend) leaks between calls."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, out: str | Path) -> Path:
    """Write `fig` to `out` (a .png path) atomically and return the path."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"output '{out}' must end in .png; try --out {out.with_suffix('.png')}")
    if out.exists() and out.is_dir():
        raise UserError(f"output '{out}' is a directory; give a file name such as {out}/a.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        # No bbox_inches="tight": the pixel size stays exactly figsize x DPI.
        fig.savefig(tmp, format="png", dpi=DPI)
    return out


def encode_prompt(model: GPT, tokenizer: Tokenizer, prompt: str) -> tuple[torch.Tensor, list[str]]:
    """Token ids (1, T) of `prompt` (its last block_size tokens) and each token's text."""
    if prompt == "":
        raise UserError("the prompt is empty; give --prompt TEXT")
    ids = tokenizer.encode(prompt)[-model.config.block_size:]
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    return idx, [tokenizer.decode([i]) for i in ids]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run the block with `model` in eval mode (no dropout), then put back the mode it had."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def style_axes(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    """Title and axis labels at the house sizes."""
    ax.set_title(title, fontsize=LABEL_SIZE + 1)
    ax.set_xlabel(xlabel, fontsize=LABEL_SIZE)
    ax.set_ylabel(ylabel, fontsize=LABEL_SIZE)
    ax.tick_params(labelsize=TICK_SIZE)


def token_ticks(ax: Any, labels: Sequence[str], axis: str = "both",
                size: float = TICK_SIZE) -> None:
    """Label every row and/or column of a heatmap with token text."""
    shown = [token_label(t) for t in labels]
    if axis in ("x", "both"):
        # Single characters read best upright; longer tokens need the room of a vertical label.
        upright = all(len(t) <= 2 for t in shown)
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels(shown, fontsize=size, rotation=0 if upright else 90)
    if axis in ("y", "both"):
        ax.set_yticks(range(len(shown)))
        ax.set_yticklabels(shown, fontsize=size)
