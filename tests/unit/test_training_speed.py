"""The speed machinery: MFU accounting, the peak table and cached ceiling, the compile and
CUDA choices (checked on CPU by branching on device objects and mocking what needs a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gptscratch.data.batches import get_batch
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT
from gptscratch.runtime.device import choose_compile
from gptscratch.training import mfu
from gptscratch.training.metrics import progress_line


def test_flops_per_token_counts_every_matmul() -> None:
    config = ModelConfig(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=8,
                         bias=False)
    model = GPT(config)
    n = model.num_params()
    # By hand, per token forward: each layer's 4 weight matmuls (qkv 8x24, proj 8x8, fc 8x32,
    # proj 32x8) and the LM head (8x100), 2 FLOPs per multiply-add; attention scores and
    # weighted sum over T=16 keys, 2 x 2 x 16 x 8 per layer. Training = 3 x forward.
    weights = 2 * (2 * (8 * 24 + 8 * 8 + 8 * 32 + 32 * 8) + 8 * 100)
    attention = 2 * (2 * 2 * 16 * 8)
    layer_norm_gains = 6 * 5 * 8  # counted in 6N too, as nanoGPT does: a rounding error
    assert mfu.flops_per_token(config, n) == 3 * (weights + attention) + layer_norm_gains


@pytest.mark.parametrize(("name", "tflops"), [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A10G", 70.0), ("NVIDIA L4", 121.0),
])
def test_gpu_peak_table(name: str, tflops: float) -> None:
    assert mfu.gpu_peak_flops(name) == tflops * 1e12


def test_unknown_gpu_has_no_table_peak() -> None:
    assert mfu.gpu_peak_flops("Some Future Accelerator") is None


def test_cuda_peak_comes_from_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    peak, source = mfu.peak_flops(torch.device("cuda"), torch.bfloat16)
    assert peak == 989e12 and "data sheet" in source
    assert mfu.peak_flops(torch.device("cuda"), torch.bfloat16, 500.0)[0] == 500e12


def test_cpu_ceiling_is_measured_once_and_cached(monkeypatch: pytest.MonkeyPatch,
                                                 private_cache: Path) -> None:
    calls = []

    def fake_measure(device: torch.device, dtype: torch.dtype) -> float:
        calls.append(dtype)
        return 1.5e12

    monkeypatch.setattr(mfu, "measure_matmul_flops", fake_measure)
    cpu = torch.device("cpu")
    peak, source = mfu.peak_flops(cpu, torch.bfloat16)
    assert peak == 1.5e12 and "measured" in source and "bfloat16" in source
    assert mfu.peak_flops(cpu, torch.bfloat16) == (peak, source)
    assert calls == [torch.bfloat16]  # measured once, then read from the cache
    mfu.peak_flops(cpu, torch.float32)
    assert calls == [torch.bfloat16, torch.float32]  # a ceiling per dtype
    cached = json.loads((private_cache / "matmul_ceiling.json").read_text())
    assert len(cached) == 2 and all("threads" in k for k in cached)
    assert mfu.peak_flops(cpu, torch.bfloat16, given_tflops=2.0)[0] == 2e12


def test_measured_matmul_rate_is_the_best_timed_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """2 n^3 FLOPs over the fastest of the timed runs; the two warm-up runs never count."""
    # The two warm-ups read the clock at their start only; then (start, end) of timed runs
    # taking 0.5, 0.25 and 0.4 s.
    clock = iter([0.0, 1.0, 2.0, 2.5, 3.0, 3.25, 4.0, 4.4])
    monkeypatch.setattr(mfu.time, "perf_counter", lambda: next(clock))
    torch.manual_seed(3)
    before = torch.get_rng_state()
    rate = mfu.measure_matmul_flops(torch.device("cpu"), torch.float32, size=64, repeats=3)
    assert rate == pytest.approx(2 * 64**3 / 0.25)
    # The measurement must not move the global RNG: the first run on a machine (which
    # measures) would otherwise draw other dropout masks than every later run (cached).
    assert torch.equal(torch.get_rng_state(), before)


def test_freed_memory_is_kept_for_reuse_on_glibc() -> None:
    import ctypes
    import ctypes.util
    import platform

    from gptscratch.runtime.cpu import keep_freed_memory

    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc
    assert keep_freed_memory() is glibc  # idempotent
    if not glibc:
        return

    class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2: ten size_t counters
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2()
    big = torch.ones(16 * 2**20)  # 64 MiB: glibc's defaults would serve it with a fresh mmap
    during = libc.mallinfo2()
    del big
    after = libc.mallinfo2()
    assert during.hblkhd - before.hblkhd < 2**20  # not mmapped: it came from the heap
    assert after.fordblks >= 64 * 2**20  # freed, and kept in the heap for the next step



def test_progress_line_shows_mfu() -> None:
    line = progress_line(10, 100, 2.5, 1e-3, 15_000, 12.0, 100.0, mfu=0.234)
    assert "15.0k tok/s | MFU  23.4%" in line
    assert "MFU" not in progress_line(10, 100, 2.5, 1e-3, 15_000, 12.0, 100.0)
    # Under a time budget the total is the forecast number of steps, marked as such.
    assert "step     10/~2400 |" in progress_line(10, 2400, 2.5, 1e-3, 15_000, 12.0, 100.0,
                                                 estimated_total=True)


def test_compile_default_per_device() -> None:
    assert choose_compile(None, torch.device("cuda"))[0] is True
    assert choose_compile(None, torch.device("cuda"), max_steps=5000, max_time=3600)[0] is True
    # A short run on a GPU: the cold compile would cost more than it saves.
    assert choose_compile(None, torch.device("cuda"), max_steps=50)[0] is False
    assert choose_compile(None, torch.device("cuda"), max_steps=5000, max_time=120)[0] is False
    assert choose_compile(True, torch.device("cuda"), max_steps=50) == (True, "requested")
    assert choose_compile(None, torch.device("cpu"))[0] is False
    assert choose_compile(True, torch.device("cpu")) == (True, "requested")
    assert choose_compile(False, torch.device("cuda")) == (False, "requested")


def test_cuda_batches_are_pinned_and_copied_without_blocking(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch of get_batch, on a CPU-only machine: pin_memory and .to are recorded."""
    pinned, copies = [], []

    def fake_pin(self: torch.Tensor) -> torch.Tensor:
        pinned.append(self.shape)
        return self

    def fake_to(self: torch.Tensor, device: object, non_blocking: bool = False) -> torch.Tensor:
        copies.append((str(device), non_blocking))
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(tokens, 4, 8, torch.Generator().manual_seed(0), torch.device("cuda", 1))
    assert pinned == [(4, 8), (4, 8)]
    assert copies == [("cuda:1", True), ("cuda:1", True)]
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_speed_is_the_whole_windows_training_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """tokens/s comes from the window's wall time minus its evaluation pauses, over all its
    steps; an evaluation in the middle of a window neither inflates nor deflates it."""
    from gptscratch.training import metrics

    clock = iter([100.0, 130.0])  # the window starts at 100 s; the line is written at 130 s
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    window = metrics.ProgressWindow(torch.device("cpu"))
    window.steps, window.paused = 10, 10.0  # 10 steps, and a 10 s evaluation among them
    assert window.seconds_per_step() == pytest.approx(2.0)  # (30 - 10) / 10
    line = progress_line(10, 100, 2.5, 1e-3, 15_000, 12.0, 100.0, paused=10.0)
    assert line.endswith("(speed excludes 10.0 s of evaluation)")
    assert "excludes" not in progress_line(10, 100, 2.5, 1e-3, 15_000, 12.0, 100.0)
