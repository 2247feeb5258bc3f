"""The run report: one self-contained HTML file that lays runs side by side.

Each run is read back from its folder (`load_run`) and shown with its losses, steps (and what
ended them), tokens seen, wall time, curves, samples and the copy check of the last sample (done
by the caller, `api.report`), then its settings (the differences first, the rest folded).
Pictures are inlined as base64 PNGs, with no script and no outside link, so the file opens
anywhere offline; every text from a run is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.errors import UserError
from gptscratch.evaluation.memorisation import CopyReport
from gptscratch.files import atomic_file
from gptscratch.training.metrics import format_duration, read_metrics
from gptscratch.viz import canvas
from gptscratch.viz.curves import plot_curves

MARKER = "<!-- written by gptscratch report -->"  # a file with it may be replaced
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tr.differs td { background: #fff4c2; }
pre { background: #f7f7f7; padding: 8px; white-space: pre-wrap; max-width: 1300px; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #666; }
"""


@dataclass
class RunSummary:
    """One run as a report shows it."""

    name: str  # the run folder as it was given (what the report calls the run)
    path: Path
    settings: dict[str, Any] = field(default_factory=dict)  # model and train configs, flat
    evals: list[dict[str, Any]] = field(default_factory=list)  # evaluation records, in order
    progress: list[dict[str, Any]] = field(default_factory=list)  # training-loss records
    samples: list[tuple[int, str]] = field(default_factory=list)  # (step, text) per evaluation
    steps: int = 0  # the last step the run logged
    tokens_per_step: int | None = None  # the global batch in tokens (None: no checkpoint)
    wall_time: float | None = None  # training seconds, from the last record
    data_dir: str = ""  # the prepared data it trained on (for the copy check), "" if unknown

    @property
    def tokens_seen(self) -> int | None:
        return self.steps * self.tokens_per_step if self.tokens_per_step else None

    @property
    def final(self) -> dict[str, Any]:
        """The last evaluation record ({} before the first)."""
        return self.evals[-1] if self.evals else {}

    @property
    def ended_by(self) -> str:
        """What ended the run, as far as its settings and records tell: its time budget, its
        step count, or a stop before either."""
        cap, budget = self.settings.get("max_iters"), self.settings.get("max_time")
        if isinstance(cap, int) and self.steps >= cap:
            return f"ran its {cap:,} steps"
        if budget and self.wall_time is not None and self.wall_time >= 0.98 * float(budget):
            return (f"its {format_duration(float(budget))} time budget ended it"
                    + (f"; {cap:,} steps was only a cap" if isinstance(cap, int) else ""))
        return "stopped before its end (interrupted, or --stop-at)" if self.settings else ""

    @property
    def best(self) -> dict[str, Any]:
        """The evaluation record with the lowest val loss ({} before the first)."""
        return min(self.evals, key=lambda r: float(r["val_loss"]), default={})


def load_run(run: str | Path) -> RunSummary:
    """Read a run folder written by `gptscratch train` (its metrics.jsonl and latest checkpoint).

    Raises:
        UserError: `run` is not such a folder (no metrics.jsonl), or it holds no records yet.
    """
    path = Path(run)
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise UserError(f"'{run}' is not a gptscratch run folder (it has no metrics.jsonl); "
                        "give folders written by gptscratch train, e.g. --runs out/a out/b")
    records = read_metrics(metrics)
    if not records:
        raise UserError(f"'{metrics}' holds no records yet; train longer than one log interval")
    summary = RunSummary(name=str(run), path=path)
    summary.evals = [r for r in records if "val_loss" in r]
    summary.progress = [r for r in records if "loss" in r and "step" in r]
    summary.samples = [(int(r["step"]), str(r["sample"])) for r in records if "sample" in r]
    summary.steps = max(int(r.get("step", 0)) for r in records)
    times = [float(r["elapsed"]) for r in records if isinstance(r.get("elapsed"), (int, float))]
    summary.wall_time = times[-1] if times else None
    try:
        meta = load_checkpoint(path, prefer="latest", verify=False).meta
    except UserError:
        return summary  # stopped before its first checkpoint: curves, but no settings
    model, train = meta.get("model_config", {}), meta.get("train_config", {})
    summary.settings = {**model, **train}
    summary.data_dir = str(meta.get("data_dir", ""))
    try:
        summary.tokens_per_step = (int(train["batch_size"]) * int(train["grad_accum"])
                                   * int(model["block_size"]) * int(meta.get("world_size", 1)))
    except (KeyError, TypeError, ValueError):
        summary.tokens_per_step = None
    return summary


def check_out(out: str | Path) -> Path:
    """The report's path, refused when writing it would destroy something.

    Raises:
        UserError: `out` is a folder, does not end in .html, or is a file that is not an
            earlier report of ours.
    """
    path = Path(out)
    if path.is_dir():
        raise UserError(f"--out '{out}' is a folder; give a file name such as "
                        f"{path / 'report.html'}")
    if path.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out '{out}' must end in .html; try --out "
                        f"{path.with_suffix('.html')}")
    if path.exists():
        with path.open("rb") as f:
            head = f.read(len(MARKER) + 64)
        if MARKER.encode() not in head:
            raise UserError(f"'{out}' exists and is not a gptscratch report; choose another "
                            "--out or move it away")
    return path


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _loss_overlay(runs: Sequence[RunSummary], out: Path) -> Path | None:
    """Every run's training loss (a thin line, from its progress records) and validation loss
    (dots, from its evaluations) on one plot, a colour per run; None when no run has either."""
    if not any(r.evals or r.progress for r in runs):
        return None
    fig = canvas.new_figure(10.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        if run.progress:
            ax.plot([r["step"] for r in run.progress], [r["loss"] for r in run.progress],
                    color=color, lw=1, alpha=0.6, label=f"{run.name}: training loss")
        if run.evals:
            ax.plot([r["step"] for r in run.evals], [r["val_loss"] for r in run.evals],
                    color=color, lw=2, marker="o", ms=4, label=f"{run.name}: validation loss")
    canvas.style_axes(ax, "Training and validation loss of every run", "step",
                      "loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.suptitle("Runs compared", fontsize=canvas.TITLE_SIZE)
    return canvas.save_png(fig, out)


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return "n/a"


def _setting(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return format_duration(seconds) if seconds >= 60 else f"{seconds:.1f} s"


def _row(label: str, cells: Sequence[str], css: str = "") -> str:
    """A table row: `cells` are HTML already (escaped where they hold run text)."""
    cls = f' class="{css}"' if css else ""
    return f"<tr{cls}><th>{html.escape(label)}</th>" + "".join(
        f"<td>{c}</td>" for c in cells) + "</tr>\n"


def _summary_table(runs: Sequence[RunSummary]) -> str:
    esc = html.escape
    rows = [
        _row("run", [f"<b>{esc(r.name)}</b>" for r in runs]),
        _row("steps", [f"{r.steps:,}" + (f" ({html.escape(r.ended_by)})" if r.ended_by else "")
                       for r in runs]),
        _row("tokens seen", [f"{r.tokens_seen:,}" if r.tokens_seen else "n/a" for r in runs]),
        _row("wall time", [_duration(r.wall_time) for r in runs]),
        _row("final train loss", [_number(r.final.get("train_loss")) for r in runs]),
        _row("final val loss", [_number(r.final.get("val_loss")) for r in runs]),
        _row("best val loss", [f"{_number(r.best.get('val_loss'))} (step {r.best['step']})"
                               if r.best else "n/a" for r in runs]),
    ]
    return "<table>\n" + "".join(rows) + "</table>\n"


def _settings_table(runs: Sequence[RunSummary]) -> str:
    """Every setting of every run: those whose values differ between runs first (highlighted),
    then the ones they share, folded away (an HTML <details>, no script)."""
    names = list(dict.fromkeys(k for r in runs for k in r.settings))
    if not names:
        return '<p class="note">No settings: no run has a checkpoint yet.</p>\n'
    differ, same = [], []
    for name in names:
        values = [html.escape(_setting(r.settings[name])) if name in r.settings else "n/a"
                  for r in runs]
        if len(set(values)) > 1:
            differ.append(_row(name, values, "differs"))
        else:
            same.append(_row(name, values))
    header = _row("setting", [html.escape(r.name) for r in runs])
    parts = []
    if differ:
        parts.append("<table>\n" + header + "".join(differ) + "</table>\n")
    if same:
        shared = "the runs share" if len(runs) > 1 else "of the run"
        parts.append(f"<details><summary>{len(same)} settings {shared} (click to show)"
                     f"</summary>\n<table>\n{header}{''.join(same)}</table>\n</details>\n")
    return "".join(parts)


def _copy_text(copy: CopyReport | str | None) -> str:
    if copy is None:
        return '<p class="note">Copy check: no sample to check.</p>\n'
    if isinstance(copy, str):
        return f'<p class="note">Copy check: not available ({html.escape(copy)}).</p>\n'
    return (f"<p>Copy check of the last sample: its longest span found verbatim in the "
            f"training text is {len(copy.longest)} characters; {100 * copy.overlap:.1f}% of "
            f"its word {copy.n}-grams occur there.</p>\n"
            f"<pre>{html.escape(copy.longest)}</pre>\n")


def _run_section(run: RunSummary, picture: Path, copy: CopyReport | str | None) -> str:
    parts = [f"<h2>{html.escape(run.name)}</h2>\n",
             f'<img src="{_data_uri(picture)}" alt="training curves of '
             f'{html.escape(run.name, quote=True)}">\n', "<h3>Samples over training</h3>\n"]
    if not run.samples:
        parts.append('<p class="note">No samples (eval_sample_tokens was 0, or the run '
                     "predates them).</p>\n")
    for step, text in run.samples:
        parts.append(f"<p>step {step}</p>\n<pre>{html.escape(text)}</pre>\n")
    parts.append(_copy_text(copy))
    return "".join(parts)


def render_report(runs: Sequence[RunSummary], pictures: Sequence[Path],
                  overlay: Path | None, copies: Mapping[str, CopyReport | str | None]) -> str:
    """The whole HTML page; `pictures` are the runs' curves, in order."""
    title = "Training report: " + ", ".join(r.name for r in runs)
    head = (f"<!DOCTYPE html>\n{MARKER}\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1>\n")
    body = ["<h2>Summary</h2>\n", _summary_table(runs)]
    if overlay is not None:
        body.append(f'<img src="{_data_uri(overlay)}" alt="training and validation loss of '
                    'every run">\n')
    body += [_run_section(r, p, copies.get(r.name))
             for r, p in zip(runs, pictures, strict=True)]
    body += ["<h2>Settings</h2>\n", _settings_table(runs)]
    return head + "".join(body) + "</body></html>\n"


def write_report(runs: Sequence[RunSummary], out: str | Path,
                 copies: Mapping[str, CopyReport | str | None]) -> Path:
    """Draw the pictures, render the page and write it to `out` (see `check_out`) atomically;
    return the path. `copies`: by run name, the copy check of its last sample, or why none."""
    path = check_out(out)
    if not runs:
        raise UserError("no runs given; pass at least one run folder, e.g. --runs out/run")
    with tempfile.TemporaryDirectory() as tmp:
        pictures = [plot_curves([r.path], Path(tmp) / f"run{i}.png") for i, r in enumerate(runs)]
        overlay = _loss_overlay(runs, Path(tmp) / "overlay.png")
        page = render_report(runs, pictures, overlay, copies)
    with atomic_file(path) as part:
        part.write_text(page, encoding="utf-8")
    return path
