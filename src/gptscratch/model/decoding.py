"""Decoding: feed the model its own predictions, one token at a time.

`Decoder` holds a batch of rows (prompts of any lengths, left-padded) and gives every row's
next-token scores; the caller picks the tokens (`sampling.sample_next_token`) and appends them.
With the KV cache it prefills the prompts once, then feeds one token per row per step; without
it re-runs the whole context each step, as nanoGPT does (kept for learning and as the tests'
oracle). Rows can leave (`keep`) and join (`add`) mid-decoding. When the context fills
block_size, the window slides: the newest `window_keep` tokens are prefilled into a fresh cache
(the uncached path crops each step; the two agree until the context first fills). Beam search
and `gptscratch.generation.engine` are built on `Decoder`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gptscratch.model.gpt import GPT
from gptscratch.model.kv_cache import KVCache


def window_keep(block_size: int) -> int:
    """How many recent tokens survive a slide: half the window. Every token then sees at least
    half a context, and the re-prefills cost one prefilled token per generated token. (Keeping
    3/4 made it three per token, which took the shakespeare-char preset's time per token at the
    end of a 1,024-token generation to 1.5-1.7x that at the start.)"""
    return max(1, block_size // 2)


def generation_bytes(model: GPT, batch: int, use_cache: bool = True) -> int:
    """Rough memory a batch of `batch` rows needs on top of the weights: the KV cache, the
    (B, V) logits with their sampling copies, and one layer's activations for a full window."""
    c = model.config
    itemsize = model.transformer.wte.weight.element_size()
    cache = KVCache.bytes_needed(c.n_layer, batch, c.n_embd, c.block_size, itemsize)
    logits = 6 * batch * c.vocab_size * 4
    window = batch * c.block_size * (8 * c.n_embd * itemsize + c.n_head * c.block_size * 4)
    return (cache if use_cache else 0) + logits + window


class Decoder:
    """Generates tokens for a batch of prompts.

    Args:
        model: the GPT, in eval mode; its parameter dtype is the compute dtype.
        prompts: token ids of each row (at least one token each; longer than block_size is
            fine: only the last block_size tokens are read).
        use_cache: prefill once and decode with the KV cache (True), or re-run the whole
            context each step (False).
    """

    def __init__(self, model: GPT, prompts: Sequence[Sequence[int]],
                 use_cache: bool = True) -> None:
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        self.model = model
        self.use_cache = use_cache
        self.block_size = model.config.block_size
        device = model.transformer.wte.weight.device
        # Left padding: every row ends at the same column, so one new column per step serves all.
        longest = max(len(p) for p in prompts)
        self.seq = torch.zeros(len(prompts), longest, dtype=torch.long, device=device)  # (B, T)
        for row, ids in enumerate(prompts):
            self.seq[row, longest - len(ids):] = torch.tensor(list(ids), dtype=torch.long)
        self.pad = torch.tensor([longest - len(p) for p in prompts], device=device)  # (B,)
        self.rows = torch.arange(len(prompts), device=device)
        # Identical prompts (several samples of one prompt) are prefilled once, then copied.
        self._shared_prompt = all(list(p) == list(prompts[0]) for p in prompts)
        self.cache: KVCache | None = None

    @property
    def batch(self) -> int:
        return self.seq.size(0)

    def _prefill(self, start: int, end: int | None = None) -> torch.Tensor:
        """Run the model over columns start:end into a fresh cache when caching (n samples of
        one prompt are prefilled once, then copied); the (B, C) features of the last position
        (empty if the columns are)."""
        window, pad = self.seq[:, start:end], (self.pad - start).clamp(min=0)  # (B, W), (B,)
        if not self.use_cache:
            cache = self.model.new_kv_cache(self.batch, pad) if bool(pad.any()) else None
            return self.model.features(window, cache)[:, -1]  # the cache only masks padding
        rows = 1 if self._shared_prompt and self.batch > 1 else self.batch
        self._shared_prompt = False
        self.cache = self.model.new_kv_cache(rows, pad[:rows])
        h = (self.model.features(window[:rows], self.cache)[:, -1] if window.size(1)
             else window.new_zeros(rows, 0))
        if rows < self.batch:
            self.cache.reorder(torch.zeros(self.batch, dtype=torch.long, device=pad.device))
        return h.expand(self.batch, -1)

    @torch.inference_mode()
    def logits(self) -> torch.Tensor:
        """(B, V) fp32 scores for every active row's next token."""
        T = self.seq.size(1)
        if not self.use_cache or self.cache is None:
            h = self._prefill(max(0, T - self.block_size))
        elif self.cache.length == self.block_size:
            h = self._prefill(T - window_keep(self.block_size))  # slide the window
        else:
            h = self.model.features(self.seq[:, -1:], self.cache)[:, -1]
        return self.model.logits(h).float()

    @torch.inference_mode()
    def append(self, ids: torch.Tensor) -> None:
        """Add one (B, 1) int64 token per active row."""
        self.seq = torch.cat([self.seq, ids], dim=1)

    @torch.inference_mode()
    def keep(self, rows: torch.Tensor) -> None:
        """Keep only (or repeat, or reorder) the given active rows, (N,) int64 indices into the
        current batch: finished rows leave the batch, beams follow their parents."""
        self.seq = self.seq.index_select(0, rows)
        self.pad = self.pad.index_select(0, rows)
        self.rows = self.rows.index_select(0, rows)
        if self.cache is not None:
            self.cache.reorder(rows)
        self._shared_prompt = False

    @torch.inference_mode()
    def add(self, prompts: Sequence[Sequence[int]]) -> None:
        """Add rows to a batch already decoding with the cache, without running its rows again
        (re-prefilling the batch would cost a joining row's prompt for every running row).

        The new prompts are prefilled on their own, all but their last token, and their cache
        rows join this batch's, lined up at the newest position (the shorter side gains left
        padding); the next `logits()` feeds every row its newest token. A joining row computes
        what it would alone, up to the rounding of the masked kernel.
        """
        if not self.use_cache or self.cache is None:
            raise ValueError("add() needs a batch that has started decoding with the cache")
        new = Decoder(self.model, prompts)
        new._prefill(max(0, new.seq.size(1) - self.block_size), -1)  # all but the newest token
        assert new.cache is not None
        width = max(self.seq.size(1), new.seq.size(1))
        self.pad = torch.cat([self.pad + width - self.seq.size(1),
                              new.pad + width - new.seq.size(1)])
        self.seq = torch.cat([F.pad(self.seq, (width - self.seq.size(1), 0)),
                              F.pad(new.seq, (width - new.seq.size(1), 0))])  # (B, T)
        first = int(self.rows.max()) + 1 if self.rows.numel() else 0
        self.rows = torch.cat([self.rows, new.rows + first])
        self.cache.extend(new.cache)
        self._shared_prompt = False

    @torch.inference_mode()
    def drop_common_padding(self) -> None:
        """Trim the cache's leading slots that every row pads (left behind when the longest
        rows leave), so the cache fills no sooner than the remaining rows need."""
        if self.cache is not None and self.batch:
            self.cache.shift(-int(self.cache.pad.min()))
