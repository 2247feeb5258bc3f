"""Where tensors live: the one function that turns `--device auto|cpu|cuda|mps` into a device.

Also the CPU start-up setting that must come before any parallel work, and whether to run the
model through torch.compile on that device.
"""

from __future__ import annotations

import torch

from gptscratch.errors import UserError


def set_cpu_float_mode() -> None:
    """Flush denormal floats to zero.

    Measured here: matmuls over denormal fp32 inputs ran up to 80x slower. OpenMP worker
    threads inherit the floating-point mode when they are created, so this must run before the
    first parallel op of the process (the CLI calls it first thing; `train` calls it too).
    """
    torch.set_flush_denormal(True)


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
