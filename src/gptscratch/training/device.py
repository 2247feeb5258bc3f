"""Where tensors live: the one function that turns `--device auto|cpu|cuda|mps` into a device.

Also the CPU start-up settings (denormals, the memory allocator), and whether to run the model
through torch.compile on that device.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

import torch

from gptscratch.errors import UserError


def set_cpu_float_mode() -> None:
    """Flush denormal floats to zero.

    Measured here: matmuls over denormal fp32 inputs ran up to 80x slower. OpenMP worker
    threads inherit the floating-point mode when they are created, so this must run before the
    first parallel op of the process (the CLI calls it first thing; `train` calls it too).
    """
    torch.set_flush_denormal(True)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's <malloc.h>
_allocator_kept = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process for reuse; True if it was done.

    A training step allocates the same large tensors (activations, logits, gradients) every
    step and frees them. By default glibc serves each block above its mmap threshold with a
    fresh `mmap` and hands it back to the OS on free, so the next step takes a page fault for
    every 4 KiB it touches again. With mmap off and heap trimming off, freed blocks stay in
    the heap and are reused, as PyTorch's own CUDA caching allocator does on GPUs. Measured
    on the 2-core VM (docs/benchmarks.md): a GPT-2 124M bf16 step (batch 4 x 256) went from
    2.6-4.4 s to 1.7-1.8 s, and its time no longer swings between runs. The cost: the
    process keeps its peak heap until it exits (the same peak, not more). It is process-wide
    and is done once; other C libraries (macOS, musl) are left alone.
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


def choose_device(spec: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; an explicit device is checked."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {spec!r} asked for but no CUDA GPU is available; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {spec!r} asked for but MPS is not available; use --device cpu")
    return device


def choose_compile(requested: bool | None, device: torch.device) -> tuple[bool, str]:
    """Whether to train through `torch.compile`, and why (for the log).

    `--compile` / `--no-compile` force it. Otherwise: on for CUDA, where fusing the
    element-wise ops into the matmuls' neighbours is the known large win and a compile of
    tens of seconds is small against a GPU run; off elsewhere. On this 2-core CPU a cold
    compile of the shakespeare-char preset cost more wall time than it saved in a 5-minute
    run (docs/benchmarks.md has the figures), and MPS support is partial.
    """
    if requested is not None:
        return requested, "requested"
    if device.type == "cuda":
        return True, "default on CUDA: fused kernels pay back the compile time"
    return False, (f"default on {device.type}: a cold compile does not pay back in a short "
                   "run; --compile to force")
