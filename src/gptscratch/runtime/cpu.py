"""CPU settings: flushing denormals, keeping freed memory, and what bf16 support the CPU has.
Process-wide switches with measured reasons (docs/benchmarks.md), each set once, by the
command that needs it, before the work it speeds up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform
from pathlib import Path

import torch


def set_cpu_float_mode() -> None:
    """Flush denormal floats to zero: matmuls over denormal fp32 inputs ran up to 80x slower
    here. OpenMP threads inherit the mode when created, so this runs before the process's first
    parallel op (first thing in `api.train`, `training.setup.start_runtime`,
    `checkpoints.load.load_model`)."""
    torch.set_flush_denormal(True)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's <malloc.h>
_allocator_kept = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (process-wide, once); True if done.

    Each step allocates and frees the same large tensors; by default glibc serves blocks
    above its mmap threshold with a fresh `mmap` and returns them on free, so the next step
    page-faults on every 4 KiB again. With mmap and trimming off they stay in the heap and are
    reused, as PyTorch's CUDA caching allocator does. Measured on the 2-core VM
    (docs/benchmarks.md): a GPT-2 124M bf16 step (batch 4 x 256) took 4.5 s without and 1.5 s
    with it (3.1x; the preset's step 1.08x), and no longer swings between runs. The cost: the
    peak heap is kept until exit (peak RSS 3.4 against 3.0 GB at 124M). Other C libraries
    (macOS, musl) are left alone.
    """
    global _allocator_kept
    if _allocator_kept:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # mallopt returns 1 on success.
        done = (libc.mallopt(_M_MMAP_MAX, 0) == 1
                and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1)
    except (OSError, AttributeError):
        return False
    _allocator_kept = done
    if done:
        logging.getLogger("gptscratch").debug("glibc malloc: keeping freed memory for reuse")
    return done


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether the CPU has bf16 matrix instructions (AMX-BF16 or AVX512-BF16): with AMX, bf16
    matmuls ran about 5x faster than fp32 here; without them bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def cpu_supports_bf16() -> bool:
    """Whether PyTorch's CPU kernels (oneDNN) can compute in bf16 at all on this CPU."""
    return (bool(torch.backends.mkldnn.is_available())
            and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
