"""The warnings a run deserves: memorisation risk, an oversized batch, an endless warm-up, and
overfitting seen in the curves."""

from __future__ import annotations

import pytest

from gptscratch.training.advice import OVERFIT_EVALS, OverfitWatch, plan_warnings


def test_a_sound_plan_gets_no_warning() -> None:
    # The shakespeare-char preset on the built-in corpus: 4.5M tokens, 2.4M parameters.
    assert plan_warnings(4_488_263, 2_400_000, 16 * 128, 20_000, 100, timed=True) == []


@pytest.mark.parametrize(("plan", "needle"), [
    ((5_000, 2_400_000, 2048, 200, 10, False), "5,000 tokens for a model of 2,400,000"),
    ((50_000, 10_000, 64 * 1024, 200, 10, False), "larger than the whole training split"),
    ((50_000, 10_000, 2048, 60, 100, False), "--warmup-iters 6"),
])
def test_each_trap_is_named(plan: tuple, needle: str) -> None:
    warnings = plan_warnings(*plan[:5], timed=plan[5])
    assert len(warnings) == 1 and needle in warnings[0]


def test_warm_up_is_not_judged_against_a_time_budgets_cap() -> None:
    assert plan_warnings(50_000, 10_000, 2048, 20_000, 100_000, timed=True) == []


def test_overfitting_is_said_once_after_the_pattern_holds() -> None:
    watch = OverfitWatch()
    curve = [(2.0, 2.1), (1.8, 2.0), (1.6, 2.05), (1.5, 2.1)]  # val rose twice: not yet
    assert [watch.observe(*point) for point in curve] == [None] * 4
    said = watch.observe(1.4, 2.2)  # the third rise in a row while train falls
    assert said is not None and f"{OVERFIT_EVALS} evaluations" in said
    assert "2.0000 -> 2.2000" in said and "1.8000 -> 1.4000" in said
    assert watch.observe(1.3, 2.3) is None  # once per run


def test_noise_is_not_overfitting() -> None:
    watch = OverfitWatch()
    curve = [(2.0, 2.1), (1.9, 2.15), (1.8, 2.12), (1.7, 2.14), (1.6, 2.16), (1.65, 2.2)]
    assert all(watch.observe(*point) is None for point in curve)
