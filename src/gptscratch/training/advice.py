"""Warnings a run deserves: settings and curves that quietly waste it.

Each is one line in the log, never an error (the run may be exactly what the user wants):
`plan_warnings` before the first step, `OverfitWatch` as the evaluations come in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Evaluations in a row in which val loss rises while train loss falls before we say so: one
# or two can be noise in the fixed-batch estimates.
OVERFIT_EVALS = 3


def plan_warnings(train_tokens: int, n_params: int, tokens_per_step: int, max_steps: int,
                  warmup_iters: int, timed: bool) -> list[str]:
    """The warnings a run's plan deserves, before its first step (`tokens_per_step`: the global
    batch; `timed`: a time budget ends the run, so `max_steps` is only a cap)."""
    warnings = []
    # More parameters than tokens: a 2.4M-parameter model on a 5 KB corpus reached train loss
    # 0.05 against val 5.9, and 90 % of its samples were copied.
    if train_tokens < n_params:
        warnings.append(
            f"the training split has {train_tokens:,} tokens for a model of {n_params:,} "
            "parameters: it can learn the text by heart rather than its patterns (watch val "
            "loss, and check samples with --check-copy); give it more text or a smaller model "
            "(--n-layer, --n-embd)")
    if tokens_per_step > train_tokens:
        warnings.append(
            f"one step's batch ({tokens_per_step:,} tokens) is larger than the whole training "
            f"split ({train_tokens:,} tokens): each step sees the same text several times "
            "over; use a smaller --batch-size or --block-size, or more text")
    if not timed and warmup_iters >= max_steps:
        warnings.append(
            f"the warm-up ({warmup_iters} steps) is as long as the run ({max_steps} steps): "
            f"the learning rate never reaches its peak; try --warmup-iters "
            f"{max(1, max_steps // 10)}")
    return warnings


@dataclass
class OverfitWatch:
    """Follows the losses of successive evaluations and says, once, when the model overfits:
    val loss rising for `OVERFIT_EVALS` evaluations in a row while train loss falls."""

    history: list[tuple[float, float]] = field(default_factory=list)  # (train, val) per eval
    warned: bool = False

    def observe(self, train_loss: float, val_loss: float) -> str | None:
        """Record one evaluation; the warning, the first time the pattern shows."""
        self.history.append((train_loss, val_loss))
        recent = self.history[-(OVERFIT_EVALS + 1):]
        if self.warned or len(recent) <= OVERFIT_EVALS:
            return None
        pairs = list(zip(recent, recent[1:], strict=False))
        if not all(b[1] > a[1] and b[0] < a[0] for a, b in pairs):
            return None
        self.warned = True
        (train0, val0), (train1, val1) = recent[0], recent[-1]
        return (f"val loss has risen for {OVERFIT_EVALS} evaluations in a row ({val0:.4f} -> "
                f"{val1:.4f}) while train loss fell ({train0:.4f} -> {train1:.4f}): the model "
                "is memorising its training text (best/ keeps the lowest-val checkpoint); use "
                "more text, a smaller model, --dropout 0.1, or stop earlier")
