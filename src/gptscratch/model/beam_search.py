"""Beam search: keep the N most probable continuations instead of sampling one.

Each step extends every running beam by every token and ranks the 2N best extensions by total
log-probability; those that end (an end token, a stop rule) are set aside as finished and the
best N others run on. Hypotheses compare by sum(log p) / length ** length_penalty, as in
Hugging Face `generate`: a raw sum of negative log-probabilities always penalises length, and
length_penalty > 0 favours longer hypotheses. The beams are rows of one `Decoder`, whose cache
rows follow the surviving beams' parents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptscratch.model.config import BeamConfig, SamplingConfig
from gptscratch.model.decoding import Decoder
from gptscratch.model.gpt import GPT
from gptscratch.model.sampling import TokenCounts, apply_penalties


@dataclass
class Hypothesis:
    """A beam: generated token ids, their summed log-probability, and its score."""

    ids: list[int]
    logprob: float
    score: float
    finished: bool


def _score(logprob: float, length: int, length_penalty: float) -> float:
    return logprob / max(length, 1) ** length_penalty


@torch.inference_mode()
def beam_search(model: GPT, prompt: Sequence[int], max_new_tokens: int, config: BeamConfig, *,
                is_finished: Callable[[list[int]], bool] | None = None,
                sampling: SamplingConfig | None = None, use_cache: bool = True
                ) -> list[Hypothesis]:
    """The best hypotheses continuing `prompt` (token ids), best first (at most `config.beams`).

    Args:
        model: the GPT, in eval mode.
        is_finished: says whether a continuation (its token ids) has ended, e.g. at an end
            token or a stop string; by default hypotheses end only at max_new_tokens.
        sampling: only its repetition / frequency / presence penalties are used (beam search
            is deterministic: temperature and the filters do not apply).
    """
    n = config.beams
    decoder = Decoder(model, [list(prompt)], use_cache=use_cache)
    history: TokenCounts | None = None  # the beams' tokens so far, for the penalties
    beams = [Hypothesis([], 0.0, 0.0, False)]
    finished: list[Hypothesis] = []
    for step in range(max_new_tokens):
        logits = decoder.logits()  # (B, V), one row per running beam
        if sampling is not None and sampling.uses_penalties:
            if history is None:
                history = TokenCounts([list(prompt)], logits.size(-1), logits.device)
            logits = apply_penalties(logits, sampling, history)
        logp = F.log_softmax(logits, dim=-1)
        totals = torch.tensor([b.logprob for b in beams], device=logp.device).unsqueeze(1) + logp
        V = logp.size(-1)
        k = min(2 * n, totals.numel())
        best, flat = torch.topk(totals.flatten(), k)  # the 2N best extensions, best first
        parents: list[int] = []
        tokens: list[int] = []
        running: list[Hypothesis] = []
        for rank, (total, index) in enumerate(zip(best.tolist(), flat.tolist(), strict=True)):
            parent, token = divmod(index, V)
            ids = beams[parent].ids + [token]
            length = step + 1
            if is_finished is not None and is_finished(ids):
                # Only extensions ranked among the N best may finish (as in Hugging Face): a
                # poor ending must not crowd out better running beams.
                if rank < n:
                    finished.append(Hypothesis(ids, total, _score(total, length,
                                                                  config.length_penalty), True))
                continue
            if len(running) < n:
                running.append(Hypothesis(ids, total, _score(total, length,
                                                             config.length_penalty), False))
                parents.append(parent)
                tokens.append(token)
        finished = sorted(finished, key=lambda h: -h.score)[:n]
        if not running or _done(finished, running, config, step + 1, max_new_tokens):
            beams = running
            break
        beams = running
        device = logp.device
        decoder.keep(torch.tensor(parents, device=device))
        new = torch.tensor(tokens, device=device).unsqueeze(1)  # (B, 1)
        decoder.append(new)
        if history is not None:
            history.reorder(torch.tensor(parents, device=device))
            history.add(new)
    return sorted(finished + beams, key=lambda h: -h.score)[:n]


def _done(finished: list[Hypothesis], running: list[Hypothesis], config: BeamConfig,
          length: int, max_new_tokens: int) -> bool:
    if len(finished) < config.beams:
        return False
    if config.early_stopping:
        return True
    # Could any running beam still beat the worst finished hypothesis? Log-probabilities only
    # fall as a beam grows, but with a positive length penalty a longer hypothesis divides by
    # more, so bound it at the longest length it could reach.
    best_running = max(b.logprob for b in running)
    bound_length = max_new_tokens if config.length_penalty > 0 else length
    return _score(best_running, bound_length, config.length_penalty) <= finished[-1].score
