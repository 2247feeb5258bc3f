"""Training telemetry: `metrics.jsonl` (one JSON object a line, passed on to the loggers of
`tracking.py`) and the progress line.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gptscratch.files import append_text, atomic_file

if TYPE_CHECKING:
    from gptscratch.training.tracking import Sink


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(step: int, total: int, loss: float, lr: float, tokens_per_s: float,
                  elapsed: float, eta: float, mfu: float | None = None,
                  estimated_total: bool = False, paused: float = 0.0) -> str:
    """One human-readable line: step, loss, learning rate, tokens/s, MFU (a fraction), elapsed
    time and ETA. `estimated_total` marks a total forecast by the time budget (`812/~2400`);
    `paused`: seconds of evaluation in the window, left out of the speed."""
    mfu_text = f" | MFU {100 * mfu:5.1f}%" if mfu is not None else ""
    paused_text = f" (speed excludes {paused:.1f} s of evaluation)" if paused > 0 else ""
    return (f"step {step:>6}/{'~' if estimated_total else ''}{total} | loss {loss:.4f} | "
            f"lr {lr:.2e} | {tokens_per_s / 1000:7.1f}k tok/s{mfu_text} | "
            f"{format_duration(elapsed)} elapsed | ETA {format_duration(eta)}{paused_text}")


class ProgressWindow:
    """The steps since the last progress line: summed loss and gradient norm (device tensors,
    read once per line, so a step never waits), their count, and the seconds spent evaluating,
    which the speed (the window's training time over its steps) leaves out."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.grad_norm = torch.zeros((), device=device)  # summed over the updating steps
        self.restart()

    def restart(self) -> None:
        self.loss.zero_()
        self.grad_norm.zero_()
        self.steps = 0
        self.start = time.perf_counter()
        self.paused = 0.0
        self.skipped = 0  # updates skipped for a non-finite gradient

    def seconds_per_step(self) -> float:
        return (time.perf_counter() - self.start - self.paused) / max(self.steps, 1)


def eta(step: int, max_steps: int, seconds_per_step: float, elapsed: float,
        max_time: float | None) -> tuple[float, int]:
    """Seconds left and the step the run will end at: `max_steps` at the current speed, or
    earlier when a time budget (`max_time`, seconds) runs out first."""
    remaining = (max_steps - step) * seconds_per_step
    by_time = max(0.0, max_time - elapsed) if max_time else math.inf
    if by_time < remaining:
        return by_time, step + round(by_time / seconds_per_step)
    return remaining, max_steps


class MetricsLog:
    """Appends records to `metrics.jsonl` and passes each to the sinks (`tracking.open_sinks`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sinks: list[Sink] = []
        path.parent.mkdir(parents=True, exist_ok=True)

    def attach(self, sinks: list[Sink]) -> None:
        self.sinks.extend(sinks)

    def write(self, record: dict[str, Any]) -> None:
        append_text(self.path, json.dumps(record) + "\n")
        for sink in self.sinks:
            sink.write(record)

    def write_sample(self, step: int, text: str) -> None:
        """A text sampled from the model at `step`: the record {"step", "sample"}."""
        append_text(self.path, json.dumps({"step": step, "sample": text}) + "\n")
        for sink in self.sinks:
            sink.write_sample(step, text)

    def close(self) -> None:
        """Close the sinks (TensorBoard's writer, the wandb run); metrics.jsonl needs none."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close()

    def truncate_after(self, step: int) -> None:
        """Drop records past `step`, atomically: on resume, steps after the checkpoint will be
        trained again (and a line cut short by a kill could not be parsed)."""
        if not self.path.exists():
            return
        keep = [json.dumps(r) + "\n" for r in read_metrics(self.path) if r.get("step", 0) <= step]
        with atomic_file(self.path) as tmp:
            tmp.write_text("".join(keep), encoding="utf-8")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All whole records of a metrics.jsonl file (a line cut short by a kill is left out)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
