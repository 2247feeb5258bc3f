"""Where tensors live: the one function that turns `--device auto|cpu|cuda|mps` into a device,
and how much memory is free there (generation checks a batch fits before it starts).
"""

from __future__ import annotations

import logging
import os

import torch

from gptscratch.errors import UserError
from gptscratch.runtime.build import first_use_notice


def choose_device(spec: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; an explicit device is checked.

    The first time a torch version is used here, the log says which build it is
    (`build.first_use_notice`).
    """
    notice = first_use_notice()
    if notice:
        logging.getLogger("gptscratch").info(notice)
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


def available_memory(device: torch.device) -> int | None:
    """Free bytes on `device` (the GPU's free memory, or the machine's available RAM), or
    None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:  # Linux: MemAvailable counts the page cache the kernel would give back; MemFree not
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def check_fits(needed: int, device: torch.device, what: str, fix: str) -> None:
    """Refuse, before allocating, what cannot fit in the device's free memory.

    Raises:
        UserError: `what` needs more than is free; the message says `fix`.
    """
    free = available_memory(device)
    if free is not None and needed > free:
        raise UserError(f"{what} needs about {needed / 2**30:,.1f} GiB but only "
                        f"{free / 2**30:,.1f} GiB is free on {device}; {fix}")
