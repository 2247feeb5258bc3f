"""Training curves from one or more runs' `metrics.jsonl`: loss, learning rate, tokens/s, one
colour per run so runs compare at a glance. The training loop writes one record per log
interval (`loss`, `lr`, `tokens_per_s`) and one per evaluation (`train_loss`, `val_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gptscratch.errors import UserError
from gptscratch.training.metrics import read_metrics
from gptscratch.viz import canvas

FIGSIZE = (13.0, 8.0)  # inches; 1300 x 800 pixels


@dataclass
class RunCurves:
    """One run's series, each a list of (step, value) pairs."""

    name: str
    loss: list[tuple[int, float]] = field(default_factory=list)  # mean training loss per log
    lr: list[tuple[int, float]] = field(default_factory=list)
    tokens_per_s: list[tuple[int, float]] = field(default_factory=list)
    train_loss: list[tuple[int, float]] = field(default_factory=list)  # at evaluations
    val_loss: list[tuple[int, float]] = field(default_factory=list)


def load_curves(run: str | Path) -> RunCurves:
    """Read a run directory's metrics.jsonl (or the file itself) into series."""
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"no metrics file at '{path}'; give a run directory written by "
                        "gptscratch train (it holds metrics.jsonl)")
    name = path.parent.name if path.name == "metrics.jsonl" else path.stem
    curves = RunCurves(name=name)
    try:
        records = read_metrics(path)
    except ValueError as e:
        raise UserError(f"'{path}' is not valid JSON lines ({e}); is it a metrics.jsonl?") from None
    for r in records:
        step = int(r.get("step", 0))
        for key in ("loss", "lr", "tokens_per_s", "train_loss", "val_loss"):
            if key in r:
                getattr(curves, key).append((step, float(r[key])))
    if not (curves.loss or curves.val_loss):
        raise UserError(f"'{path}' has no loss records yet; train longer than one log interval")
    return curves


def plot_curves(runs: Sequence[str | Path], out: str | Path = "curves.png") -> Path:
    """Draw loss (train and val), learning rate and tokens/s of each run (a directory or its
    metrics.jsonl); return the PNG path."""
    if not runs:
        raise UserError("no runs given; pass at least one run directory, e.g. --runs out/run")
    all_curves = [load_curves(r) for r in runs]
    fig = canvas.new_figure(*FIGSIZE)
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 2), hspace=0.35, wspace=0.2,
                            left=0.07, right=0.98, top=0.9, bottom=0.08)
    ax_loss = fig.add_subplot(grid[0, :])
    ax_lr = fig.add_subplot(grid[1, 0])
    ax_speed = fig.add_subplot(grid[1, 1])
    colours = [f"C{i % 10}" for i in range(len(all_curves))]
    for c, colour in zip(all_curves, colours, strict=True):
        # Colour tells the run, line style the kind of loss (the second legend below).
        if c.loss:
            ax_loss.plot(*zip(*c.loss, strict=True), color=colour, alpha=0.35, lw=1)
        if c.val_loss:
            ax_loss.plot(*zip(*c.val_loss, strict=True), color=colour, lw=2.2, marker="o",
                         ms=4, label=c.name)
        if c.train_loss:
            ax_loss.plot(*zip(*c.train_loss, strict=True), color=colour, lw=1.2, ls="--",
                         marker=".")
        if c.lr:
            ax_lr.plot(*zip(*c.lr, strict=True), color=colour, lw=1.8, label=c.name)
        if c.tokens_per_s:
            steps, speed = zip(*c.tokens_per_s, strict=True)
            ax_speed.plot(steps, [s / 1000 for s in speed], color=colour, lw=1.5, label=c.name)
    canvas.style_axes(ax_loss, "Loss (cross-entropy, nats per token; lower is better)", "step",
                      "loss")
    canvas.style_axes(ax_lr, "Learning rate", "step", "learning rate")
    canvas.style_axes(ax_speed, "Training speed", "step", "thousand tokens / s")
    peaks = [max(v for _, v in c.lr) for c in all_curves if c.lr]
    if peaks and max(peaks) > 20 * min(peaks):
        ax_lr.set_yscale("log")  # a learning-rate sweep spans decades
    else:
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in (ax_loss, ax_lr, ax_speed):
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    kinds = [Line2D([], [], color="grey", lw=2.2, marker="o", ms=4, label="val (held-out text)"),
             Line2D([], [], color="grey", lw=1.2, ls="--", marker=".", label="train (at eval)"),
             Line2D([], [], color="grey", lw=1, alpha=0.5, label="train (running mean)")]
    if len(all_curves) > 1:
        ax_loss.add_artist(ax_loss.legend(title="run", fontsize=9, loc="upper center"))
    ax_loss.legend(handles=kinds, fontsize=9, loc="upper right")
    if len(all_curves) > 1:
        ax_lr.legend(fontsize=9)
    names = ", ".join(c.name for c in all_curves)
    fig.suptitle(f"Training curves: {names}", fontsize=canvas.TITLE_SIZE)
    return canvas.save_png(fig, out)
