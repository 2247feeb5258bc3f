"""Where a results file's figures come from, recorded in every one (`"provenance"`): the
machine (CPU model, cores, the vector extensions that decide bf16, memory, GPU), the torch
build, the dtype measured, the date and time, the commit (with "+changes" when the working
tree differed from it) and the command. A figure in the docs names its results file; this is
what makes that file say on what it was measured.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # what bf16 speed on a CPU depends on


def _cpu() -> tuple[str, list[str]]:
    """The CPU's model name and which of FLAGS it has (Linux; elsewhere the platform's name)."""
    name, flags = platform.processor() or platform.machine(), list[str]()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, flags
    for line in text.splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            flags = [f for f in FLAGS if f in have]
            break
    return name, flags


def _memory_gib() -> float | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages / 2**30, 1)


def _commit() -> str | None:
    """HEAD's hash, "+changes" appended when tracked files differ from it; None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def provenance(dtype: str, command: list[str] | None = None) -> dict[str, Any]:
    """This run's provenance; `dtype` is what was measured ("float32", "bfloat16", "mixed"
    where rows differ, or "n/a"), `command` the command line (default: this process's)."""
    cpu, flags = _cpu()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    argv = command if command is not None else [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]
    if argv and argv[0].endswith(".py"):
        argv = ["python", str(Path(argv[0]).resolve().relative_to(REPO))
                if Path(argv[0]).resolve().is_relative_to(REPO) else argv[0], *argv[1:]]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "memory_gib": _memory_gib(),
                    "gpu": gpu},
        "torch": torch.__version__ + (f" (CUDA {torch.version.cuda})" if torch.version.cuda
                                      else ""),
        "python": platform.python_version(),
        "dtype": dtype,
        "commit": _commit(),
        "command": " ".join(argv),
    }
