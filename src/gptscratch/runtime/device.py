"""Where tensors live: the one function that turns `--device auto|cpu|cuda|mps` into a device,
the PyTorch build behind it, how much memory is free there, and whether training there goes
through `torch.compile` (`choose_compile`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

import torch

from gptscratch.errors import UserError
from gptscratch.files import atomic_file, cache_dir

README_INSTALL = "README.md, section 'Installing: GPU or CPU-only PyTorch'"
_BUILD_SEEN = "torch-build.json"  # in the cache folder: the last torch version named


def choose_device(spec: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; an explicit device is checked. The
    first time a torch version is used here, the log says which build it is."""
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


def describe_build() -> str:
    """One line: the torch version, its kind of build, and the GPUs it sees."""
    version = torch.__version__
    if torch.version.cuda is None:
        return f"torch {version}, a CPU-only build"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus == 0:
        return f"torch {version}, a CUDA {torch.version.cuda} build, and no GPU found"
    name = torch.cuda.get_device_name(0)
    return f"torch {version}, a CUDA {torch.version.cuda} build, {gpus} GPU(s) ({name})"


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(device: torch.device, dtype: torch.dtype) -> str:
    """What a speed measured here depends on, as a cache key: the device's name (the GPU's,
    or the CPU's with its thread count), the dtype and the torch version."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return f"{device.type}|{name}|{threads} threads|{dtype}|torch {torch.__version__}"


def first_use_notice() -> str | None:
    """The build line the first time this torch version is used here, else None: the same
    `pip install` gives a CPU build on some machines and a CUDA build (several GB) on others,
    and a CUDA build on a machine without a GPU is the common surprise."""
    path = cache_dir() / _BUILD_SEEN
    try:
        seen = json.loads(path.read_text(encoding="utf-8")).get("torch")
    except (OSError, ValueError, AttributeError):
        seen = None
    if seen == torch.__version__:
        return None
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"torch": torch.__version__}) + "\n", encoding="utf-8")
    line = f"running on {describe_build()}"
    if torch.version.cuda is not None and not torch.cuda.is_available():
        line += (f"; on a machine without a GPU the CPU-only build is several GB smaller and "
                 f"installs faster: see {README_INSTALL}")
    return line


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
    """Before allocating, raise a UserError (ending in `fix`) if `what` needs more than is free."""
    free = available_memory(device)
    if free is not None and needed > free:
        raise UserError(f"{what} needs about {needed / 2**30:,.1f} GiB but only "
                        f"{free / 2**30:,.1f} GiB is free on {device}; {fix}")


# A run shorter than this cannot repay a cold compile of about a minute on a GPU (a 124M step
# takes 0.1-0.3 s there): a smoke test or a short fine-tune runs eagerly.
COMPILE_MIN_STEPS = 300
COMPILE_MIN_SECONDS = 600.0


def choose_compile(requested: bool | None, device: torch.device, max_steps: int | None = None,
                   max_time: float | None = None) -> tuple[bool, str]:
    """Whether to train through `torch.compile`, and why (for the log); `requested` forces it.

    On CUDA: on (fusing element-wise ops into their neighbours is the known large win) unless
    the run is capped below the thresholds above (reasoned, not measured: no GPU was at hand).
    Off elsewhere: on the 2-core CPU a cold compile of the shakespeare-char preset (33 s)
    repays itself only after ~5.3 minutes of 9 % faster steps, longer than its 4.5-minute
    run, and at the GPT-2 124M shape compiled steps were slower at any run length
    (docs/benchmarks.md); MPS support is partial.
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
