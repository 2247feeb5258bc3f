"""`train --fit`: with less free memory than a step needs, the run splits the step into
micro-batches (then checkpoints activations) and trains the same curve; without room even for
that, it refuses in one line before writing anything."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import TINY_MODEL, TINY_TRAIN

from gptscratch import api
from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig
from gptscratch.training.config import TrainConfig
from gptscratch.training.memory import estimate_training_memory, fit_to_memory
from gptscratch.training.metrics import read_metrics
from gptscratch.training.presets import get_preset
from gptscratch.training.run import CHAR_VOCAB_GUESS

PRESET = "shakespeare-char-gpt2"
# Dropout off: with it, one batch of 8 and two of 4 draw their masks differently.
RUN = {**TINY_MODEL, **TINY_TRAIN, "batch_size": 8, "max_iters": 6, "log_interval": 1,
       "eval_interval": 100, "dropout": 0.0, "dtype": "float32"}


def need(batch: int, checkpointing: bool = False) -> int:
    """The estimate `train` makes for a step of the tiny run at this micro-batch."""
    spec = get_preset(PRESET)
    shape = ModelConfig(vocab_size=CHAR_VOCAB_GUESS, **{**spec.model, **TINY_MODEL})
    config = spec.train.replace(batch_size=batch, activation_checkpointing=checkpointing)
    return estimate_training_memory(shape, config).total


def cap_memory(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    for module in ("gptscratch.runtime.device", "gptscratch.training.setup"):
        monkeypatch.setattr(f"{module}.available_memory", lambda device: free)


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]


def test_the_rule_takes_the_largest_micro_batch_that_fits_then_checkpointing() -> None:
    spec = get_preset(PRESET)
    shape = ModelConfig(vocab_size=CHAR_VOCAB_GUESS, **{**spec.model, **TINY_MODEL})
    config = spec.train.replace(batch_size=12, grad_accum=1)
    assert fit_to_memory(shape, config, need(12)) == config  # it fits: unchanged
    got = fit_to_memory(shape, config, need(6) + 1)
    assert got is not None and (got.optim.batch_size, got.optim.grad_accum) == (6, 2)
    got = fit_to_memory(shape, config, need(5))  # 5 does not divide 12: 4 x 3
    assert got is not None and (got.optim.batch_size, got.optim.grad_accum) == (4, 3)
    below_one = need(1) - 1
    assert need(1, checkpointing=True) <= below_one  # checkpointing one sequence fits
    got = fit_to_memory(shape, config, below_one)
    assert got is not None and got.system.activation_checkpointing
    assert got.optim.batch_size * got.optim.grad_accum == 12
    assert fit_to_memory(shape, config, need(1, checkpointing=True) - 1) is None


def test_a_capped_run_accumulates_and_trains_the_same_curve(
        tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    api.train(PRESET, tiny_corpus, tmp_path / "whole", overrides=RUN)
    cap_memory(monkeypatch, (need(4) + need(8)) // 2)
    with pytest.raises(UserError, match=r"needs about .* or --fit to choose$"):
        api.train(PRESET, tiny_corpus, tmp_path / "refused", overrides=RUN)
    assert not (tmp_path / "refused").exists()  # refused before the first write
    with caplog.at_level(logging.INFO, logger="gptscratch"):
        api.train(PRESET, tiny_corpus, tmp_path / "fit", overrides={**RUN, "fit": True})
    assert "--fit: 8 sequences a step do not fit" in caplog.text
    assert "2 micro-batches of 4" in caplog.text
    saved = TrainConfig.from_dict(load_checkpoint(tmp_path / "fit").meta["train_config"])
    assert (saved.optim.batch_size, saved.optim.grad_accum) == (4, 2)
    whole, fit = losses(tmp_path / "whole"), losses(tmp_path / "fit")
    assert len(whole) == len(fit) == 6
    assert fit == pytest.approx(whole, rel=1e-5)


def test_with_no_room_for_one_sequence_it_checkpoints_activations(
        tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cap_memory(monkeypatch, need(1) - 1)
    api.train(PRESET, tiny_corpus, tmp_path / "r",
              overrides={**RUN, "max_iters": 2, "fit": True})
    saved = TrainConfig.from_dict(load_checkpoint(tmp_path / "r").meta["train_config"])
    assert saved.system.activation_checkpointing
    assert saved.optim.batch_size * saved.optim.grad_accum == 8


def test_with_no_room_at_all_it_refuses_in_one_line(
        tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cap_memory(monkeypatch, need(1, checkpointing=True) - 1)
    with pytest.raises(UserError) as e:
        api.train(PRESET, tiny_corpus, tmp_path / "r", overrides={**RUN, "fit": True})
    assert "even one sequence a micro-batch with activation checkpointing does not fit" in str(
        e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "r").exists()
