"""Random training batches from a flat array of token ids: the last step of the data layer,
called by the trainer once per step on the memory-mapped ids of `token_files.PreparedData`,
or on conversations packed into rows (`packing.PackedRows`, chat fine-tuning).
"""

from __future__ import annotations

import numpy as np
import torch

from gptscratch.data.packing import PackedRows
from gptscratch.data.token_files import Tokens
from gptscratch.errors import UserError


def get_batch(tokens: Tokens | PackedRows, batch_size: int, block_size: int,
              generator: torch.Generator, device: torch.device | str = "cpu",
              shard: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw `batch_size` (B) random windows of `block_size + 1` (T + 1) tokens.

    With several processes, `shard=(rank, world_size)`: the generator (seeded alike on every
    rank) draws the offsets of the whole global batch and each rank reads its own slice, so
    together they train on exactly the batch one process would draw.

    Packed conversations give `batch_size` random rows instead, whose targets are -1 where
    no loss is taken (`PackedRows.batch`).

    Args:
        tokens: Token ids, shape (N,), any integer dtype (usually a uint16 memmap), or packed
            rows of `block_size + 1` ids.
        generator: CPU generator of the offsets: restoring its state resumes the same batches.

    Returns:
        `(x, y)`, int64 of shape (B, T) on `device`; `y[b, t] == x[b, t + 1]`.

    Raises:
        UserError: The split has no more than `block_size` tokens.
    """
    rank, world_size = shard
    if isinstance(tokens, PackedRows):
        assert tokens.width == block_size + 1, "rows packed for another block_size"
        picks = torch.randint(len(tokens), (batch_size * world_size,), generator=generator)
        x, y = tokens.batch(picks[rank * batch_size : (rank + 1) * batch_size].numpy())
        return _to_device(x, y, device)
    n = len(tokens)
    if n <= block_size:
        raise UserError(f"corpus split has {n} tokens, fewer than block_size+1 "
                        f"({block_size + 1}); use a smaller --block-size or more text")
    starts = torch.randint(n - block_size, (batch_size * world_size,), generator=generator)
    starts = starts[rank * batch_size : (rank + 1) * batch_size]  # (B,): this rank's slice
    # One fancy-indexing read gathers all windows from the memmap: (B, T+1).
    offsets = starts.numpy()[:, None] + np.arange(block_size + 1)
    windows = torch.from_numpy(np.asarray(tokens[offsets], dtype=np.int64))
    x = windows[:, :-1].contiguous()  # (B, T)
    y = windows[:, 1:].contiguous()  # (B, T)
    return _to_device(x, y, device)


def _to_device(x: torch.Tensor, y: torch.Tensor,
               device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    if torch.device(device).type == "cuda":
        # Pinned (page-locked) host memory lets the copy run asynchronously, overlapping
        # with the GPU's work on the previous step instead of stalling the host.
        return (x.pin_memory().to(device, non_blocking=True),
                y.pin_memory().to(device, non_blocking=True))
    return x.to(device), y.to(device)
