"""Checkpoints written before the restructure still load, generate, evaluate and resume as the
code that wrote them did.

`fixtures/checkpoint-0.1.0/` was written by gptscratch at commit cc67240 (before the
restructure into generation/, checkpoints/ and runtime/): 4 steps of a 1-layer, 16-wide char
model on the first 20,000 characters of `fixtures/plays.txt`. The expected figures below are
what that code printed for the same calls.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import PLAYS, TESTS

from gptscratch import api

FIXTURE = TESTS / "fixtures" / "checkpoint-0.1.0"


@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "plays-20k.txt"
    path.write_text(PLAYS.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    return path


def test_an_old_checkpoint_generates_and_evaluates_as_before(text: Path) -> None:
    greedy = api.generate(FIXTURE, "First", max_new_tokens=30, seed=1, temperature=0,
                          device="cpu")
    assert greedy == "t          tue      tue      t"
    # One sample with seed 3 and one with seed 4, as the code that wrote the checkpoint gave
    # them alone; since the one engine, sample j of a batch is seeded with seed + j, so a
    # batch of two gives both (the old code drew a batch's rows from one shared generator:
    # "ajEvAauRlSnl", "TR;,MxY'AkmY").
    alone = [api.complete(FIXTURE, "MENENIUS:", max_new_tokens=12, seed=s, temperature=1.0,
                          device="cpu")[0].text for s in (3, 4)]
    assert alone == ["aTjRE;v,Agax", "DwuxwaoNnBL?"]
    sampled = api.complete(FIXTURE, "MENENIUS:", max_new_tokens=12, seed=3, temperature=1.0,
                           num_samples=2, device="cpu")
    assert [c.text for c in sampled] == alone
    result = api.evaluate(FIXTURE, text, device="cpu")
    assert result.tokens == 19_999
    assert result.loss == pytest.approx(4.001333335046917, abs=1e-6)


def test_an_old_run_resumes_exactly(text: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run / "latest")
    result = api.train("shakespeare-char", text, run, resume=True, overrides={"max_iters": 6})
    assert result.step == 6
    assert result.train_loss == pytest.approx(3.9846270084381104, abs=1e-6)
    assert result.val_loss == pytest.approx(4.019858360290527, abs=1e-6)
