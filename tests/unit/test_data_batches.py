"""Random batches: shapes, the one-token shift, determinism from the generator, short splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gptscratch.data.batches import get_batch
from gptscratch.errors import UserError


@pytest.fixture
def tokens(tmp_path: Path) -> np.memmap:
    ids = (np.arange(1000) * 7 % 50257).astype(np.uint16)  # distinct, so windows are traceable
    path = tmp_path / "train.bin"
    ids.tofile(path)
    return np.memmap(path, dtype=np.uint16, mode="r")


def test_shapes_dtype_and_shift(tokens: np.memmap) -> None:
    x, y = get_batch(tokens, 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16)
    assert x.dtype == y.dtype == torch.int64 and x.device.type == "cpu"
    assert x.is_contiguous() and y.is_contiguous()
    assert torch.equal(x[:, 1:], y[:, :-1])
    full = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    for row_x, row_y in zip(x, y, strict=True):
        start = int((full == row_x[0]).nonzero()[0])
        assert torch.equal(row_x, full[start : start + 16])
        assert torch.equal(row_y, full[start + 1 : start + 17])


def test_same_generator_state_gives_the_same_batches(tokens: np.memmap) -> None:
    gen = torch.Generator().manual_seed(1234)
    state = gen.get_state()
    first = [get_batch(tokens, 8, 32, gen) for _ in range(3)]
    gen.set_state(state)  # what a resumed trainer does
    again = [get_batch(tokens, 8, 32, gen) for _ in range(3)]
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other, _ = get_batch(tokens, 8, 32, torch.Generator().manual_seed(4321))
    assert not torch.equal(other, first[0][0])


def test_offsets_cover_the_whole_range() -> None:
    tokens = np.arange(11, dtype=np.uint16)
    x, y = get_batch(tokens, 200, 10, torch.Generator().manual_seed(0))  # only start 0 fits
    assert torch.equal(x, torch.arange(10).expand(200, 10))
    assert torch.equal(y, torch.arange(1, 11).expand(200, 10))
    starts = get_batch(np.arange(20, dtype=np.uint16), 500, 10, torch.Generator())[0][:, 0]
    assert set(starts.tolist()) == set(range(10))  # every valid start, and only those


def test_too_short_split_is_a_user_error() -> None:
    with pytest.raises(UserError) as info:
        get_batch(np.arange(64, dtype=np.uint16), 2, 64, torch.Generator())
    assert str(info.value) == (
        "corpus split has 64 tokens, fewer than block_size+1 (65); "
        "use a smaller --block-size or more text"
    )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu(tokens: np.memmap) -> None:
    cpu = get_batch(tokens, 4, 16, torch.Generator().manual_seed(5))
    gpu = get_batch(tokens, 4, 16, torch.Generator().manual_seed(5), device="cuda")
    assert gpu[0].device.type == "cuda"
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])
