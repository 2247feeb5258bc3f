"""`explain` walks the real forward pass; the copy check finds copied spans exactly."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gptscratch import api
from gptscratch.cli import main
from gptscratch.evaluation.memorisation import CorpusIndex, describe_copy
from gptscratch.model.gpt import Trace

PROMPT = "First Citizen:\nYou"


def test_explain_stages_follow_the_real_forward(tiny_run: Path) -> None:
    loaded = api.load(tiny_run, "cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    stages = api.explain(loaded, PROMPT)
    names = [s.name for s in stages]
    per_block = ["ln_1", "q, k, v", "attention weights", "attention output", "residual add",
                 "ln_2", "MLP", "residual add"]
    assert names == (["tokenize", "token embedding", "+ position embedding"]
                     + [f"block {b}: {n}" for b in range(2) for n in per_block]
                     + ["final LayerNorm", "LM head", "softmax (next token)"])
    T = len(PROMPT)
    with torch.no_grad():
        trace = Trace()
        logits = model(torch.tensor([tokenizer.encode(PROMPT)]), trace=trace)
        maps = [b["weights"] for b in trace.blocks]
    torch.testing.assert_close(stages[-2].output, logits)  # the walk is the model's forward
    torch.testing.assert_close(stages[-1].output, F.softmax(logits[0, -1], -1))
    torch.testing.assert_close(stages[3 + 2].output, maps[0])  # block 0's attention weights
    assert stages[3 + 2].shape == f"(1, 2, {T}, {T})"
    assert stages[3 + 1].shape == f"(1, {T}, 32) -> 3 x (1, 2, {T}, 16)"


def test_explain_cli_prints_every_stage(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--ckpt", str(tiny_run), "--prompt", PROMPT]) == 0
    out = capsys.readouterr().out
    for stage in ("tokenize", "token embedding", "position embedding", "block 0: ln_1",
                  "block 1: attention weights", "block 1: MLP", "final LayerNorm", "LM head",
                  "softmax (next token)", "most likely:"):
        assert stage in out
    assert len([line for line in out.splitlines() if line[:3].strip().isdigit()]) == 22


def _naive_longest(text: str, corpus: str) -> int:
    best = 0
    for i in range(len(text)):
        j = i + best + 1
        while j <= len(text) and text[i:j] in corpus:
            best, j = j - i, j + 1
    return best


def test_longest_span_matches_a_brute_force_oracle() -> None:
    rng = random.Random(0)
    for _ in range(200):
        corpus = "".join(rng.choice("ab c\n") for _ in range(rng.randint(0, 80)))
        text = "".join(rng.choice("ab cd") for _ in range(rng.randint(0, 50)))
        start, length = CorpusIndex(corpus).longest_span(text)
        assert length == _naive_longest(text, corpus), (corpus, text)
        assert length == 0 or text[start:start + length] in corpus


def test_planted_copy_is_found_and_random_text_is_not(tiny_corpus: Path) -> None:
    corpus = tiny_corpus.read_text(encoding="utf-8")
    index = CorpusIndex(corpus)
    rng = random.Random(1)
    noise = "".join(rng.choice("qxzjQXZJ0123456789") for _ in range(400))
    planted = corpus[20_000:20_250]
    report = index.check(noise[:200] + planted + noise[200:])
    assert planted in report.longest and len(report.longest) < 250 + 10
    assert report.corpus_offset <= 20_000 and corpus.find(report.longest) == report.corpus_offset
    assert report.ngrams_found >= 30  # the planted ~45 words
    clean = index.check(noise)
    assert len(clean.longest) <= 3 and clean.ngrams_found == 0
    nothing = CorpusIndex("abc").check("xyz")
    assert (nothing.longest, nothing.start, nothing.corpus_line) == ("", -1, 0)
    assert "no span" in describe_copy(nothing)


def test_check_copy_api_uses_the_checkpoints_training_text(tiny_run: Path) -> None:
    index = api.corpus_index(tiny_run)
    line = "Before we proceed any further, hear me speak."
    assert line in index.corpus  # the tiny corpus's first lines are in the train split
    report = api.check_copy(index, "Zq9 " + line + " Zq9")
    assert report.longest.strip() == line and report.overlap > 0.5
    assert api.check_copy(tiny_run, "xq zv jk 0909").ngrams_found == 0


def test_sample_check_copy_reports_on_stderr(tiny_run: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sample", "--ckpt", str(tiny_run), "--prompt", "A", "--max-new-tokens", "40",
            "--seed", "3", "--num-samples", "2"]
    assert main([*argv, "--check-copy"]) == 0
    checked = capsys.readouterr()
    assert checked.err.count("[check-copy] longest span found in the training text") == 2
    assert checked.err.count("[check-copy] word 4-grams") == 2
    assert main(argv) == 0
    assert capsys.readouterr().out == checked.out  # the sample text itself is unchanged
