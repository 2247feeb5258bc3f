"""Experiment tracking: where a run's records go besides `metrics.jsonl`, one sink per
`--logger`: TensorBoard under `<run>/tensorboard/`, `<run>/metrics.csv`, and Weights & Biases
(WANDB_MODE says online or offline). Only rank 0 logs; a resumed run continues its sinks.
"""

from __future__ import annotations

import csv
import importlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from gptscratch.errors import UserError
from gptscratch.files import append_text, atomic_file

# Scalar names in TensorBoard and wandb: progress records under train/, evaluations under eval/.
TAGS = {**{k: f"train/{k}" for k in ("loss", "lr", "tokens_per_s", "mfu", "grad_norm",
                                      "skipped_updates")},
        **{k: f"eval/{k}" for k in ("train_loss", "val_loss", "val_perplexity")}}
# The CSV's first columns, in this order; keys a newer loop adds follow them.
CSV_COLUMNS = ("step", "loss", "lr", "tokens_per_s", "mfu", "grad_norm", "skipped_updates",
               "train_loss", "val_loss", "val_perplexity", "elapsed")
# What each optional logger imports, and the pip command that installs it.
_NEEDS = {"tensorboard": ("torch.utils.tensorboard",
                          "pip install -c constraints.txt -e '.[track]' (or pip install "
                          "tensorboard)"),
          "wandb": ("wandb", "pip install wandb")}


class Sink(Protocol):
    """One destination of a run's records."""

    def write(self, record: dict[str, Any]) -> None: ...

    def write_sample(self, step: int, text: str) -> None: ...

    def close(self) -> None: ...


def check_loggers(loggers: Sequence[str]) -> None:
    """Refuse, before a run writes anything, a logger whose package is not installed (a
    UserError such as `--logger wandb needs the wandb package: pip install wandb`)."""
    for name in [n for n in loggers if n in _NEEDS]:
        module, pip = _NEEDS[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise UserError(f"--logger {name} needs the {name} package: {pip}") from None


def open_sinks(loggers: Sequence[str], out_dir: Path, hparams: dict[str, Any],
               past: list[dict[str, Any]], resumed_at: int | None) -> list[Sink]:
    """The sinks `loggers` ask for, each told the run's settings (`hparams`) once.

    Args:
        loggers: names from `config.LOGGERS` ("jsonl" needs no sink: `MetricsLog` is it).
        past: the records already in metrics.jsonl (a resumed run's, up to its checkpoint).
        resumed_at: the checkpoint's step when resuming, else None.
    """
    sinks: list[Sink] = []
    if "tensorboard" in loggers:
        sinks.append(TensorBoardSink(out_dir / "tensorboard", hparams, past, resumed_at))
    if "csv" in loggers:
        sinks.append(CsvSink(out_dir / "metrics.csv", past))
    if "wandb" in loggers:
        sinks.append(WandbSink(out_dir, hparams, resumed_at))
    return sinks


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """A record's numbers by their tag (an MFU that is not reported, None, is left out)."""
    return {TAGS.get(key, key): float(value) for key, value in record.items()
            if key not in ("step", "elapsed") and isinstance(value, (int, float))
            and not isinstance(value, bool)}


def settings_table(hparams: dict[str, Any]) -> str:
    """The run's settings as a Markdown table (TensorBoard's text tab renders it)."""
    rows = "".join(f"| {name} | {value} |\n" for name, value in hparams.items())
    return "| setting | value |\n|---|---|\n" + rows


class TensorBoardSink:
    """Scalars and samples as TensorBoard event files, settings as a text table."""

    def __init__(self, folder: Path, hparams: dict[str, Any], past: list[dict[str, Any]],
                 resumed_at: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        replay = resumed_at is not None and not folder.exists()  # tensorboard added on resume
        # Readers drop every earlier event at or after purge_step: a resumed run's steps past
        # its checkpoint (trained again now), or a fresh run's leftovers from a killed one.
        self.writer = SummaryWriter(str(folder), purge_step=0 if resumed_at is None
                                    else resumed_at + 1)
        self.writer.add_text("settings", settings_table(hparams), resumed_at or 0)
        for record in past if replay else []:
            self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        if "sample" in record:
            self.write_sample(int(record["step"]), str(record["sample"]))
            return
        for tag, value in _scalars(record).items():
            self.writer.add_scalar(tag, value, int(record["step"]))
        self.writer.flush()  # a killed run keeps what it logged

    def write_sample(self, step: int, text: str) -> None:
        # A fenced block keeps the sample's line breaks in the Markdown view.
        self.writer.add_text("sample", f"```\n{text}\n```", step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class CsvSink:
    """`metrics.csv`: one row per record (samples aside), a column per key, blank where a
    record lacks it; rebuilt from metrics.jsonl's records when opened, so it matches that file."""

    def __init__(self, path: Path, past: list[dict[str, Any]]) -> None:
        self.path = path
        self.rows = [r for r in past if "sample" not in r]
        self.columns = list(CSV_COLUMNS)
        self._rewrite()

    def _line(self, values: Sequence[Any]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else v for v in values])
        return buffer.getvalue()

    def _rewrite(self) -> None:
        self.columns += [k for r in self.rows for k in r if k not in self.columns]
        self.columns = list(dict.fromkeys(self.columns))
        text = self._line(self.columns) + "".join(
            self._line([r.get(c) for c in self.columns]) for r in self.rows)
        with atomic_file(self.path) as tmp:
            tmp.write_text(text, encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if "sample" in record:
            return
        self.rows.append(record)
        if set(record) - set(self.columns):
            self._rewrite()  # a new column: the header changes, so the file is written anew
        else:
            append_text(self.path, self._line([record.get(c) for c in self.columns]))

    def write_sample(self, step: int, text: str) -> None:
        pass  # text has no column; metrics.jsonl and the report hold the samples

    def close(self) -> None:
        pass


class WandbSink:
    """A Weights & Biases run: the settings as its config, scalars and samples by step."""

    def __init__(self, out_dir: Path, hparams: dict[str, Any], resumed_at: int | None) -> None:
        import wandb

        id_file = out_dir / "wandb-run-id"
        run_id = (id_file.read_text(encoding="utf-8").strip()
                  if resumed_at is not None and id_file.is_file() else None)
        # The mode (online, offline, disabled) is left to the environment: WANDB_MODE.
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "gptscratch"),
                              name=out_dir.resolve().name, config=hparams, dir=str(out_dir),
                              id=run_id, resume="allow" if run_id else None)
        if run_id is None:
            with atomic_file(id_file) as tmp:
                tmp.write_text(str(self.run.id), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if "sample" in record:
            self.write_sample(int(record["step"]), str(record["sample"]))
        else:
            self.run.log(_scalars(record), step=int(record["step"]))

    def write_sample(self, step: int, text: str) -> None:
        self.run.log({"eval/sample": text}, step=step)

    def close(self) -> None:
        self.run.finish()
