"""Random training batches from a flat array of token ids: the last step of the data layer.

The trainer calls `get_batch` on the memory-mapped ids from `prepare.PreparedData` once per
step. Offsets come from a `torch.Generator` the trainer owns, so saving and restoring the
generator's state resumes the exact same sequence of batches.
"""

from __future__ import annotations

import numpy as np
import torch

from gptscratch.data.token_files import Tokens
from gptscratch.errors import UserError


def get_batch(
    tokens: Tokens,
    batch_size: int,
    block_size: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    shard: tuple[int, int] = (0, 1),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw `batch_size` random windows of `block_size + 1` tokens.

    With several training processes, `shard=(rank, world_size)`: the generator (seeded alike
    on every rank) draws the offsets of the whole global batch, `batch_size * world_size`
    windows, and each rank reads only its own slice. Ranks thus train on different windows
    that together are exactly the batch one process would draw with `batch_size * world_size`.

    Args:
        tokens: Token ids, shape (N,), any integer dtype (usually a uint16 memmap).
        batch_size: B, the number of windows.
        block_size: T, the context length.
        generator: The CPU generator the start offsets are drawn from.
        device: Where the batch goes.
        shard: (rank, world_size) of this process; (0, 1) for single-process training.

    Returns:
        `(x, y)`, both int64 of shape (B, T) on `device`; `y[b, t] == x[b, t + 1]`, i.e. y is
        the next token after each position of x.

    Raises:
        UserError: The split has no more than `block_size` tokens.
    """
    n = len(tokens)
    if n <= block_size:
        raise UserError(
            f"corpus split has {n} tokens, fewer than block_size+1 ({block_size + 1}); "
            "use a smaller --block-size or more text"
        )
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
        return (
            x.pin_memory().to(device, non_blocking=True),
            y.pin_memory().to(device, non_blocking=True),
        )
    return x.to(device), y.to(device)
