"""What a finished (or stopped) run amounts to, read back from its folder: settings, losses,
samples, steps, tokens and time. `report.py` lays several of them side by side.

Everything comes from what training wrote: `metrics.jsonl` (progress, evaluation and sample
records: `training/metrics.py`) and the latest checkpoint's `checkpoint.json` (the model and
train configs, the processes, the data folder). A run without a checkpoint yet still has its
curves; its settings are then unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.errors import UserError
from gptscratch.training.metrics import read_metrics


@dataclass
class RunSummary:
    """One run as a report shows it.

    Attributes:
        name: the run folder as it was given (what the report calls the run).
        settings: the flat model and train configs ({} when the run has no checkpoint).
        evals: the evaluation records (step, train_loss, val_loss, ...), in order.
        samples: (step, text) of the samples taken at each evaluation.
        steps: the last step the run logged.
        tokens_per_step: the global batch in tokens (None without a checkpoint).
        wall_time: training seconds, from the last record.
        data_dir: the prepared data the run trained on (for the copy check), "" if unknown.
    """

    name: str
    path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    evals: list[dict[str, Any]] = field(default_factory=list)
    samples: list[tuple[int, str]] = field(default_factory=list)
    steps: int = 0
    tokens_per_step: int | None = None
    wall_time: float | None = None
    data_dir: str = ""

    @property
    def tokens_seen(self) -> int | None:
        return self.steps * self.tokens_per_step if self.tokens_per_step else None

    @property
    def final(self) -> dict[str, Any]:
        """The last evaluation record ({} before the first)."""
        return self.evals[-1] if self.evals else {}

    @property
    def best(self) -> dict[str, Any]:
        """The evaluation record with the lowest val loss ({} before the first)."""
        return min(self.evals, key=lambda r: float(r["val_loss"]), default={})


def load_run(run: str | Path) -> RunSummary:
    """Read a run folder written by `gptscratch train`.

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
