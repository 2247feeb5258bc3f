"""Random training batches from a flat array of token ids: the last step of the data layer,
called by the trainer once per step on the memory-mapped ids of `token_files.PreparedData`.
"""

from __future__ import annotations

import numpy as np
import torch

from gptscratch.data.token_files import Tokens
from gptscratch.errors import UserError


def get_batch(tokens: Tokens, batch_size: int, block_size: int, generator: torch.Generator,
              device: torch.device | str = "cpu",
              shard: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw `batch_size` (B) random windows of `block_size + 1` (T + 1) tokens.

    With several processes, `shard=(rank, world_size)`: the generator (seeded alike on every
    rank) draws the offsets of the whole global batch and each rank reads its own slice, so
    together they train on exactly the batch one process would draw.

    Args:
        tokens: Token ids, shape (N,), any integer dtype (usually a uint16 memmap).
        generator: CPU generator of the offsets: restoring its state resumes the same batches.

    Returns:
        `(x, y)`, int64 of shape (B, T) on `device`; `y[b, t] == x[b, t + 1]`.

    Raises:
        UserError: The split has no more than `block_size` tokens.
    """
    n = len(tokens)
    if n <= block_size:
        raise UserError(f"corpus split has {n} tokens, fewer than block_size+1 "
                        f"({block_size + 1}); use a smaller --block-size or more text")
    rank, world_size = shard
    starts = torch.randint(n - block_size, (batch_size * world_size,), generator=generator)
    starts = starts[rank * batch_size : (rank + 1) * batch_size]  # (B,): this rank's slice
    # One fancy-indexing read gathers all windows from the memmap: (B, T+1).
    offsets = starts.numpy()[:, None] + np.arange(block_size + 1)
    windows = torch.from_numpy(np.asarray(tokens[offsets], dtype=np.int64))
    x = windows[:, :-1].contiguous()  # (B, T)
    y = windows[:, 1:].contiguous()  # (B, T)
    if torch.device(device).type == "cuda":
        # Pinned (page-locked) host memory lets the copy run asynchronously, overlapping
        # with the GPU's work on the previous step instead of stalling the host.
        return (x.pin_memory().to(device, non_blocking=True),
                y.pin_memory().to(device, non_blocking=True))
    return x.to(device), y.to(device)
