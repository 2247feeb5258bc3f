"""Experiment tracking: TensorBoard event files (read back with TensorBoard's own reader) and
metrics.csv hold exactly what metrics.jsonl holds; the gradient norm is the one PyTorch
computes; samples leave the random state alone; a resumed run logs each step once; unknown
or missing loggers are one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
import struct
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, TINY_TRAIN, cli_error

from gptscratch import api
from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.errors import UserError
from gptscratch.training.config import TrainConfig
from gptscratch.training.metrics import read_metrics
from gptscratch.training.tracking import TAGS, check_loggers

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from tensorboard.util import tensor_util  # noqa: E402

OVER = {**TINY_MODEL, **TINY_TRAIN, "max_iters": 12, "eval_interval": 6, "log_interval": 3,
        "eval_sample_tokens": 24}


def events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def expected(run: Path, key: str) -> list[tuple[int, float]]:
    """metrics.jsonl's values of `key`, as TensorBoard stores them (float32)."""
    return [(r["step"], float(np.float32(r[key]))) for r in read_metrics(run / "metrics.jsonl")
            if r.get(key) is not None]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("tracked") / "run"
    api.train("shakespeare-char-gpt2", tiny_corpus, out,
              overrides={**OVER, "loggers": ("tensorboard", "csv")})
    return out


def test_tensorboard_scalars_equal_metrics_jsonl(tracked: Path) -> None:
    acc = events(tracked)
    for key in ("loss", "lr", "tokens_per_s", "mfu", "grad_norm", "train_loss", "val_loss"):
        want = expected(tracked, key)
        assert want, key
        assert scalars(acc, TAGS[key]) == want, key
    assert [s for s, _ in scalars(acc, "train/loss")] == [3, 6, 9, 12]
    assert [s for s, _ in scalars(acc, "eval/val_loss")] == [6, 12]


def test_tensorboard_holds_the_samples_and_settings(tracked: Path) -> None:
    acc = events(tracked)
    samples = [(r["step"], r["sample"]) for r in read_metrics(tracked / "metrics.jsonl")
               if "sample" in r]
    assert [s for s, _ in samples] == [6, 12] and all(len(t) >= 12 for _, t in samples)
    logged = [(e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode())
              for e in acc.Tensors("sample/text_summary")]
    assert logged == [(s, f"```\n{t}\n```") for s, t in samples]
    settings = tensor_util.make_ndarray(acc.Tensors("settings/text_summary")[0].tensor_proto)
    assert "| learning_rate | 0.004 |" in settings.item().decode()
    assert "| n_embd | 32 |" in settings.item().decode()


def test_csv_rows_equal_the_jsonl_records(tracked: Path) -> None:
    with (tracked / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    records = [r for r in read_metrics(tracked / "metrics.jsonl") if "sample" not in r]
    assert len(rows) == len(records) == 4 + 2
    for row, record in zip(rows, records, strict=True):
        assert {k: float(v) for k, v in row.items() if v != ""} == {
            k: float(v) for k, v in record.items() if v is not None}


def test_grad_norm_is_pytorchs_norm_of_the_first_step(tmp_path: Path,
                                                      tiny_corpus: Path) -> None:
    """Oracle: the first step's gradient, recomputed from the same weights and batch."""
    from gptscratch.data.batches import get_batch
    from gptscratch.model.gpt import GPT, lm_loss

    out = tmp_path / "r"
    api.train("shakespeare-char-gpt2", tiny_corpus, out,
              overrides={**OVER, "max_iters": 1, "log_interval": 1, "eval_sample_tokens": 0,
                         "dropout": 0.0})
    ckpt = load_checkpoint(out, "latest")
    seed = ckpt.meta["train_config"]["seed"]
    torch.manual_seed(seed)
    model = GPT(ckpt.model_config)  # the weights the run started from
    data = api.load_prepared(ckpt.meta["data_dir"])
    x, y = get_batch(data.train_tokens(), 8, 32, torch.Generator().manual_seed(seed),
                     torch.device("cpu"))
    lm_loss(model(x), y).backward()
    norm = torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(p.grad) for p in model.parameters() if p.grad is not None]))
    logged = [r["grad_norm"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert logged == pytest.approx([float(norm)], rel=1e-5)


def test_a_sample_leaves_the_random_state_and_the_mode_alone(tiny_run: Path) -> None:
    from gptscratch.training.checkpointing import sample_at_step

    loaded = api.load(tiny_run, "cpu", dtype="float32")
    model, tokenizer = loaded.model, loaded.tokenizer
    model.train()
    before = torch.get_rng_state()
    text = sample_at_step(model, tokenizer, 40, seed=7, step=10)
    assert torch.equal(torch.get_rng_state(), before) and model.training
    assert sample_at_step(model, tokenizer, 40, seed=7, step=10) == text
    assert sample_at_step(model, tokenizer, 40, seed=7, step=20) != text
    assert len(text) == 40  # a char tokenizer: one character a token


def test_a_resumed_run_logs_each_step_once(tmp_path: Path, tiny_corpus: Path) -> None:
    """Tensorboard added on resume replays the earlier records; a run killed after its
    checkpoint logs the steps past it again, and the reader keeps only the second time."""
    out = tmp_path / "r"
    over = {**OVER, "log_interval": 1}
    api.train("shakespeare-char-gpt2", tiny_corpus, out, overrides=over, stop_at=4)
    shutil.copytree(out / "latest", tmp_path / "at-4")
    tracked = {"loggers": ("tensorboard", "csv")}
    api.train("shakespeare-char-gpt2", None, out, resume=True, stop_at=8, overrides=tracked)
    shutil.rmtree(out / "latest")  # as if killed after step 8 before saving it
    shutil.copytree(tmp_path / "at-4", out / "latest")
    api.train("shakespeare-char-gpt2", None, out, resume=True, overrides=tracked)
    acc = events(out)
    assert [s for s, _ in scalars(acc, "train/loss")] == list(range(1, 13))
    for key in ("loss", "grad_norm", "val_loss"):
        assert scalars(acc, TAGS[key]) == expected(out, key), key
    with (out / "metrics.csv").open(newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f) if r["loss"]] == list(range(1, 13))


def test_loggers_from_flags_and_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    from gptscratch.cli.parser import build_parser

    args = build_parser().parse_args(["train", "--logger", "tensorboard,csv", "--logger", "csv"])
    assert TrainConfig().replace(loggers=args.loggers).run.loggers == ("tensorboard", "csv")
    assert TrainConfig.from_dict({"loggers": ["csv"]}).run.loggers == ("csv",)  # from JSON
    with pytest.raises(UserError, match="unknown logger 'tensorbord'; choose from jsonl, "
                                        "tensorboard, csv, wandb"):
        TrainConfig().replace(loggers=("tensorbord",))
    line = cli_error(["train", "--logger", "mlflow", "--out", "x"], capsys)
    assert "unknown logger 'mlflow'" in line


def test_wandb_not_installed_is_one_line_before_anything_is_written(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_corpus: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails
    with pytest.raises(UserError, match="--logger wandb needs the wandb package: pip install "
                                        "wandb"):
        check_loggers(("csv", "wandb"))
    out = tmp_path / "r"
    line = cli_error(["train", "--data", str(tiny_corpus), "--out", str(out), "--logger",
                      "wandb", "--max-iters", "2"], capsys)
    assert line == "error: --logger wandb needs the wandb package: pip install wandb"
    assert not out.exists()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UserError, match=r"--logger tensorboard needs the tensorboard package: "
                                        r"pip install -c constraints.txt -e '\.\[track\]'"):
        check_loggers(("tensorboard",))


class FakeRun:
    """What the wandb sink uses of a wandb run, recording each call."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs, self.id, self.logged, self.finished = kwargs, "abc123", [], False

    def log(self, values: dict[str, Any], step: int) -> None:
        self.logged.append((step, values))

    def finish(self) -> None:
        self.finished = True


def test_wandb_gets_the_config_the_scalars_and_the_samples(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_corpus: Path) -> None:
    runs: list[FakeRun] = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: runs.append(FakeRun(kw)) or runs[-1]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    out = tmp_path / "r"
    api.train("shakespeare-char-gpt2", tiny_corpus, out, overrides={**OVER, "loggers": ("wandb",)},
              stop_at=6)
    api.train("shakespeare-char-gpt2", None, out, resume=True)
    first, second = runs
    assert first.kwargs["config"]["learning_rate"] == 0.004 and first.kwargs["id"] is None
    assert first.kwargs["dir"] == str(out) and first.finished
    assert (second.kwargs["id"], second.kwargs["resume"]) == ("abc123", "allow")
    logged = first.logged + second.logged
    val = [(s, v["eval/val_loss"]) for s, v in logged if "eval/val_loss" in v]
    assert val == [(r["step"], r["val_loss"]) for r in read_metrics(out / "metrics.jsonl")
                   if "val_loss" in r]
    samples = [(s, v["eval/sample"]) for s, v in logged if "eval/sample" in v]
    assert samples == [(r["step"], r["sample"]) for r in read_metrics(out / "metrics.jsonl")
                       if "sample" in r]


def test_samples_at_evaluations_change_nothing_in_training(tmp_path: Path,
                                                           tiny_corpus: Path) -> None:
    """Oracle: the same run without samples. Dropout on, so a sample that drew from the global
    RNG (or left the model in eval mode) would change every later loss."""
    over = {**OVER, "max_iters": 6, "eval_interval": 2, "log_interval": 1, "dropout": 0.1}
    losses = []
    for tokens in (16, 0):
        out = tmp_path / f"s{tokens}"
        api.train("shakespeare-char-gpt2", tiny_corpus, out,
                  overrides={**over, "eval_sample_tokens": tokens})
        records = read_metrics(out / "metrics.jsonl")
        # Evaluations at steps 2, 4, 6: samples at the first and the last (and every 4th).
        assert sum("sample" in r for r in records) == (2 if tokens else 0)
        losses.append([(r["step"], r["loss"]) for r in records if "loss" in r])
    assert losses[0] == losses[1] and len(losses[0]) == 6


def test_csv_takes_a_new_column_and_keeps_earlier_rows(tmp_path: Path) -> None:
    from gptscratch.training.tracking import CsvSink

    path = tmp_path / "metrics.csv"
    sink = CsvSink(path, [{"step": 1, "loss": 2.5, "mfu": None}, {"step": 1, "sample": "hi"}])
    sink.write({"step": 2, "loss": 2.25, "skipped_updates": 1})
    sink.write({"step": 2, "val_loss": 2.0, "new_figure": 7})  # a key no column holds yet
    sink.write({"step": 3, "loss": 2.0})
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        assert reader.fieldnames is not None and reader.fieldnames[-1] == "new_figure"
    assert [(r["step"], r["loss"], r["mfu"], r["skipped_updates"], r["val_loss"],
             r["new_figure"]) for r in rows] == [
        ("1", "2.5", "", "", "", ""), ("2", "2.25", "", "1", "", ""),
        ("2", "", "", "", "2.0", "7"), ("3", "2.0", "", "", "", "")]


def wandb_records(path: Path) -> list[Any]:
    """The records of an offline wandb run file (`run-ID.wandb`): after a 7-byte header, the
    LevelDB log format (32 KiB blocks of chunks, each with a 7-byte header: checksum, length,
    type: 1 whole, 2 first, 3 middle, 4 last), each record a wandb `Record` protobuf."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos = path.read_bytes(), 32768, 7
    assert data.startswith(b":W&B")
    payloads, part = [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        part = chunk if kind in (1, 2) else part + chunk
        if kind in (1, 4):
            payloads.append(part)
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def test_a_real_wandb_run_offline(tmp_path: Path, tiny_corpus: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The real wandb package (the track extra), offline, its own folders in tmp_path: a run,
    stopped and resumed, is one wandb run (one id, kept in the run folder) whose logged
    history holds every evaluation of metrics.jsonl, and whose config holds the settings."""
    wandb = pytest.importorskip("wandb")
    for name, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"),
                        ("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config")),
                        ("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache")),
                        ("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))):
        monkeypatch.setenv(name, value)
    out = tmp_path / "r"
    api.train("shakespeare-char-gpt2", tiny_corpus, out, overrides={**OVER, "loggers": ("wandb",)},
              stop_at=6)
    api.train("shakespeare-char-gpt2", None, out, resume=True)
    run_id = (out / "wandb-run-id").read_text().strip()
    runs = sorted((out / "wandb").glob("offline-run-*"))
    # offline-run-TIME-ID, with "-1" added when both runs started in the same second.
    assert len(runs) == 2 and all(f"-{run_id}" in r.name for r in runs), runs
    records = [r for run in runs for r in wandb_records(run / f"run-{run_id}.wandb")]
    # A key with a slash is stored as its parts ("eval", "val_loss").
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json)
                for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    logged = {h["_step"]: h["eval/val_loss"] for h in history if "eval/val_loss" in h}
    assert logged == pytest.approx({r["step"]: r["val_loss"]
                                    for r in read_metrics(out / "metrics.jsonl")
                                    if "val_loss" in r})
    assert sorted(logged) == [6, 12]
    config = {i.key: json.loads(i.value_json) for r in records
              if r.WhichOneof("record_type") == "run" for i in r.run.config.update}
    assert config["learning_rate"] == 0.004 and config["n_layer"] == TINY_MODEL["n_layer"]
    assert wandb.run is None  # finished: nothing left running in this process
