"""Beam search against exhaustive search, and the penalties and min-p against their formulas."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import decode_steps

from gptscratch.errors import UserError
from gptscratch.model.beam_search import beam_search
from gptscratch.model.config import BeamConfig, ModelConfig, SamplingConfig
from gptscratch.model.gpt import GPT
from gptscratch.model.sampling import (
    TokenCounts,
    apply_penalties,
    filter_logits,
    sample_next_token,
)

VOCAB = 4


def _model(seed: int) -> GPT:
    torch.manual_seed(seed)
    model = GPT(ModelConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=16,
                            bias=True)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(30)  # peaked, well-separated distributions
    return model


def _logprob(model: GPT, prompt: list[int], continuation: tuple[int, ...]) -> float:
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([prompt + list(continuation)]))[0], dim=-1)
    return sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(continuation))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_finds_the_exhaustive_best(seed: int) -> None:
    model, prompt, horizon = _model(seed), [1, 2], 4
    best = max(itertools.product(range(VOCAB), repeat=horizon),
               key=lambda c: _logprob(model, prompt, c))
    # VOCAB ** (horizon - 1) beams keep every prefix, so the search is exact.
    found = beam_search(model, prompt, horizon, BeamConfig(beams=VOCAB ** (horizon - 1)))
    assert tuple(found[0].ids) == best
    assert found[0].logprob == pytest.approx(_logprob(model, prompt, best), abs=1e-4)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_beam_search_with_endings_and_length_penalty_matches_exhaustive(
        length_penalty: float) -> None:
    """Token 0 ends a hypothesis. Candidates: every sequence that stops at its first 0, or runs
    to the horizon; scored by sum(log p) / length ** length_penalty."""
    model, prompt, horizon = _model(3), [1, 2], 3
    candidates = set()
    for seq in itertools.product(range(VOCAB), repeat=horizon):
        end = seq.index(0) + 1 if 0 in seq else horizon
        candidates.add(seq[:end])

    def score(c: tuple[int, ...]) -> float:
        return _logprob(model, prompt, c) / len(c) ** length_penalty

    best = max(candidates, key=score)
    found = beam_search(model, prompt, horizon,
                        BeamConfig(beams=len(candidates), length_penalty=length_penalty,
                                   early_stopping=False),
                        is_finished=lambda ids: ids[-1] == 0)
    assert tuple(found[0].ids) == best
    assert found[0].score == pytest.approx(score(best), abs=1e-4)


def test_one_beam_is_greedy() -> None:
    model = _model(4)
    greedy = [int(s.ids[0]) for s in decode_steps(model, [[1, 2]], 6,
                                                     SamplingConfig(temperature=0.0))]
    assert beam_search(model, [1, 2], 6, BeamConfig(beams=1))[0].ids == greedy


def test_beam_search_without_cache_agrees() -> None:
    model = _model(5)
    a = beam_search(model, [1], 5, BeamConfig(beams=3))
    b = beam_search(model, [1], 5, BeamConfig(beams=3), use_cache=False)
    assert [h.ids for h in a] == [h.ids for h in b]


def test_early_stopping_returns_as_soon_as_enough_beams_finish() -> None:
    model = _model(6)
    found = beam_search(model, [1], 12, BeamConfig(beams=2, early_stopping=True),
                        is_finished=lambda ids: True)  # every extension ends at once
    assert all(len(h.ids) == 1 and h.finished for h in found)


def test_repetition_penalty_divides_positive_and_multiplies_negative_scores() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    history = TokenCounts([[0, 1]], 4, torch.device("cpu"))
    out = apply_penalties(logits, SamplingConfig(repetition_penalty=2.0), history)
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.5]]


def test_frequency_and_presence_penalties_count_generated_tokens() -> None:
    history = TokenCounts([[3]], 4, torch.device("cpu"))  # the prompt does not count here
    for token in (0, 0, 1):
        history.add(torch.tensor([[token]]))
    config = SamplingConfig(frequency_penalty=0.5, presence_penalty=0.25)
    out = apply_penalties(torch.zeros(1, 4), config, history)
    assert out.tolist() == [[-1.25, -0.75, 0.0, 0.0]]


def test_penalties_change_what_greedy_picks() -> None:
    logits = torch.tensor([[3.0, 2.9, 0.0]])
    history = TokenCounts([[0]], 3, torch.device("cpu"))
    plain = sample_next_token(logits, SamplingConfig(temperature=0.0), history=history)
    penalised = sample_next_token(logits, SamplingConfig(temperature=0.0,
                                                         repetition_penalty=1.5), history=history)
    assert plain.item() == 0 and penalised.item() == 1


def test_min_p_keeps_tokens_at_least_min_p_times_the_best() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]])
    kept = torch.isfinite(filter_logits(probs.log(), SamplingConfig(temperature=1.0,
                                                                    min_p=0.2)))
    assert kept.tolist() == [[True, True, True, False, False]]  # threshold 0.2 * 0.5 = 0.1
    assert math.isclose(0.2 * 0.5, 0.1)


@pytest.mark.parametrize("kw", [dict(repetition_penalty=0.0), dict(repetition_penalty=11.0),
                                dict(frequency_penalty=2.5), dict(presence_penalty=-3.0),
                                dict(min_p=1.5), dict(min_p=-0.1)])
def test_penalties_outside_their_range_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(UserError, match=next(iter(kw))):
        SamplingConfig(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", [dict(beams=0), dict(length_penalty=20.0)])
def test_bad_beam_settings_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(UserError):
        BeamConfig(**kw)  # type: ignore[arg-type]
