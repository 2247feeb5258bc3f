"""Training telemetry: `metrics.jsonl` (one JSON object a line) and the progress line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(
    step: int, total: int, loss: float, lr: float, tokens_per_s: float, elapsed: float,
    eta: float, mfu: float | None = None, estimated_total: bool = False,
) -> str:
    """One human-readable line: step, loss, learning rate, speed (tokens/s and model FLOPs
    utilisation, a fraction), elapsed time and ETA. `estimated_total` marks a total that is
    the time budget's forecast (`step 812/~2400`) rather than a fixed step count."""
    mfu_text = f" | MFU {100 * mfu:5.1f}%" if mfu is not None else ""
    return (
        f"step {step:>6}/{'~' if estimated_total else ''}{total} | loss {loss:.4f} | lr {lr:.2e} | "
        f"{tokens_per_s / 1000:7.1f}k tok/s{mfu_text} | {format_duration(elapsed)} elapsed | "
        f"ETA {format_duration(eta)}"
    )


class MetricsLog:
    """Appends records to `metrics.jsonl` in the run directory, flushed line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step`: on resume, a run interrupted after its last checkpoint
        would otherwise leave steps that will be trained again."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]
