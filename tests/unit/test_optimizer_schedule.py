"""The learning-rate schedule and AdamW parameter groups."""

from __future__ import annotations

import pytest

from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT
from gptscratch.training.optimizer import lr_at, parameter_groups


def test_lr_schedule_warmup_then_cosine_to_floor() -> None:
    lrs = [lr_at(s, 1.0, 0.1, 10, s / 100) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[100] == pytest.approx(0.1)
    assert lr_at(55, 1.0, 0.1, 10, 0.5) == pytest.approx(0.55)


def test_parameter_groups_decay_only_matrices() -> None:
    model = GPT(ModelConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16))
    decay, no_decay = parameter_groups(model, 0.1)
    assert all(p.dim() >= 2 for p in decay["params"])  # type: ignore[attr-defined]
    assert all(p.dim() == 1 for p in no_decay["params"])  # type: ignore[attr-defined]
    n = len(decay["params"]) + len(no_decay["params"])  # type: ignore[arg-type]
    assert n == len(list(model.parameters()))  # the tied weight is counted once
