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
    on the 2-core VM (docs/benchmarks.md): a GPT-2 124M bf16 step (batch 4 x 256) took 4.5 s
    without and 1.5 s with it (3.1x; the preset's step 1.08x), and no longer swings between
    runs. The cost: the process keeps its peak heap until it exits (peak RSS 3.4 against
    3.0 GB at 124M). It is process-wide and done once; other C libraries (macOS, musl) are
    left alone.
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


# A run shorter than this cannot repay a cold compile of about a minute on a GPU (a 124M step
# takes 0.1-0.3 s there): a smoke test or a short fine-tune runs eagerly.
COMPILE_MIN_STEPS = 300
COMPILE_MIN_SECONDS = 600.0


def choose_compile(requested: bool | None, device: torch.device, max_steps: int | None = None,
                   max_time: float | None = None) -> tuple[bool, str]:
    """Whether to train through `torch.compile`, and why (for the log).

    `--compile` / `--no-compile` force it. Otherwise it depends on the device and the run's
    length. On CUDA: on, where fusing the element-wise ops into their neighbours is the known
    large win, unless the run is capped below `COMPILE_MIN_STEPS` steps or
    `COMPILE_MIN_SECONDS` (a reasoned threshold, not measured here: no GPU was available).
    Off elsewhere: on this 2-core CPU a cold compile of the shakespeare-char preset (33 s)
    repays itself only after ~5.3 minutes of 9 % faster steps, longer than its 4.5-minute
    run, and at the GPT-2 124M shape compiled steps were slower at any run length
    (docs/benchmarks.md has the figures); MPS support is partial.
    """
    if requested is not None:
        return requested, "requested"
    if device.type == "cuda":
        if max_steps is not None and max_steps < COMPILE_MIN_STEPS:
            return False, (f"a {max_steps}-step run on CUDA does not repay a cold compile; "
                           "--compile to force")
        if max_time and max_time < COMPILE_MIN_SECONDS:
            return False, (f"a {max_time:g} s run on CUDA does not repay a cold compile; "
                           "--compile to force")
        return True, "default on CUDA: fused kernels pay back the compile time"
    return False, (f"default on {device.type}: a cold compile did not pay back here; "
                   "--compile to force")
