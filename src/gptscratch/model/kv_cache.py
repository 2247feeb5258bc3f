"""The KV cache: keys and values of the tokens already seen, kept so each new token costs one step.

Past keys and values never change (attention is causal), so they are computed once: the prompt
is prefilled in one forward pass, then each step feeds one new token per row and attends over
everything stored (uncached, a 1,024-token generation does ~500x the work). Storage is
preallocated, (B, H, block_size, D) per layer, so a step writes one slice and never copies the
past (Hugging Face's default cache concatenates). Rows are left-padded to a common length:
row b's `pad[b]` slots are masked out of attention and its positions start at 0 on its first
real token, so a padded row computes exactly what it would alone.
"""

from __future__ import annotations

import torch


class LayerCache:
    """One layer's view of the cache, handed to that layer's attention."""

    def __init__(self, cache: KVCache, layer: int) -> None:
        self.cache = cache
        self.layer = layer

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (B, H, T, D) keys and values after the cached ones; return all of them,
        (B, H, length + T, D) views into the preallocated buffers."""
        c = self.cache
        start, end = c.length, c.length + k.size(2)
        c.k[self.layer, :, :, start:end] = k
        c.v[self.layer, :, :, start:end] = v
        return c.k[self.layer, :, :, :end], c.v[self.layer, :, :, :end]

    def attention_mask(self, T: int) -> torch.Tensor | None:
        return self.cache.attention_mask(T)


class KVCache:
    """Keys and values for every layer of a GPT, for a batch of B rows.

    Args:
        n_layer, batch, n_head, head_dim: the model's and the batch's sizes.
        max_len: the most positions it holds (the model's block_size).
        device, dtype: where and how the keys and values are stored (the model's compute dtype).
        pad: (B,) int64 left-padding length of each row; None for none.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, head_dim: int, max_len: int,
                 device: torch.device, dtype: torch.dtype, pad: torch.Tensor | None = None
                 ) -> None:
        shape = (n_layer, batch, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0  # positions filled so far, the same for every row
        self.pad = pad if pad is not None else torch.zeros(batch, dtype=torch.long, device=device)
        self.padded = bool(self.pad.any())

    def layer(self, i: int) -> LayerCache:
        """Layer i's view, made when asked: views kept on the cache would make a reference cycle,
        freed only by Python's cyclic garbage collector (a server making a cache per request grew
        by one batch's cache per round of requests until the collector ran)."""
        return LayerCache(self, i)

    @property
    def batch(self) -> int:
        return self.k.size(1)

    @staticmethod
    def bytes_needed(n_layer: int, batch: int, n_embd: int, max_len: int, itemsize: int) -> int:
        """Memory of a cache: keys and values, every layer, every position."""
        return 2 * n_layer * batch * max_len * n_embd * itemsize

    def positions(self, T: int) -> torch.Tensor:
        """(B, T) position ids of the next T tokens: each row counts from its first real token."""
        steps = torch.arange(self.length, self.length + T, device=self.pad.device)
        return (steps.unsqueeze(0) - self.pad.unsqueeze(1)).clamp(min=0)

    def attention_mask(self, T: int) -> torch.Tensor | None:
        """Which cached positions the next T queries may attend to.

        Returns None when plain causal attention is right (no padding, and one new token or a
        prefill from empty). Otherwise a (B, 1, T, length + T) bool mask, True where attention
        is allowed: causal, never to a padding slot. A padding query attends to itself only, so
        its softmax stays finite; nothing ever reads its output.
        """
        if not self.padded and (T == 1 or self.length == 0):
            return None
        end = self.length + T
        query = torch.arange(self.length, end, device=self.pad.device).view(1, T, 1)
        key = torch.arange(end, device=self.pad.device).view(1, 1, end)
        real_key = key >= self.pad.view(-1, 1, 1)  # (B, 1, end)
        mask = (key <= query) & (real_key | (key == query))  # (B, T, end)
        return mask.unsqueeze(1)

    def advance(self, T: int) -> None:
        """Called by the model after every layer has stored its T new positions."""
        self.length += T

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep (and repeat or permute) the given rows: dropping finished rows, copying a
        prefilled prompt to several samples, or following beams in beam search."""
        self.k = self.k.index_select(1, rows)
        self.v = self.v.index_select(1, rows)
        self.pad = self.pad.index_select(0, rows)
        self.padded = bool(self.pad.any())

    def shift(self, columns: int) -> None:
        """Move every row's keys and values `columns` positions later (> 0: each row gains that
        much left padding) or earlier (< 0: drop leading slots that are padding in every row).
        Positions count from each row's first real token, so no row's computation changes;
        the batching engine lines caches up with this, and trims what rows that left wasted."""
        length = self.length + columns
        if columns == 0:
            return
        if not 0 <= length <= self.max_len or columns < -int(self.pad.min()):
            raise ValueError(f"cannot shift a cache of {self.length} positions by {columns}")
        kept = slice(0, self.length) if columns > 0 else slice(-columns, self.length)
        to = slice(max(0, columns), length)
        for buffer in (self.k, self.v):
            buffer[:, :, :, to] = buffer[:, :, :, kept].clone()  # (L, B, H, T, D)
            buffer[:, :, :, length:].zero_()
            if columns > 0:
                buffer[:, :, :, :columns].zero_()
        self.pad = self.pad + columns
        self.padded = bool(self.pad.any())
        self.length = length

    def extend(self, other: KVCache) -> None:
        """Append `other`'s rows after this cache's, lined up at the newest position: the one
        holding fewer positions is shifted right, its rows padded on the left."""
        length = max(self.length, other.length)
        self.shift(length - self.length)
        other.shift(length - other.length)
        self.k = torch.cat([self.k, other.k], dim=1)
        self.v = torch.cat([self.v, other.v], dim=1)
        self.pad = torch.cat([self.pad, other.pad])
        self.padded = bool(self.pad.any())
