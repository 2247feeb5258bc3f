"""Which PyTorch build this is (CPU or CUDA), said once, where it matters.

The same `pip install` line gives a CPU build of torch on some machines and a CUDA build
(several GB of NVIDIA libraries) on others, and a CUDA build on a machine without a GPU is
the common surprise. `first_use_notice` returns a line naming the build the first time a torch
version is used (remembered in the cache folder), with a pointer to the README's choice
between the two builds when a CUDA build finds no GPU.
"""

from __future__ import annotations

import json

import torch

from gptscratch.files import atomic_file, cache_dir

README_INSTALL = "README.md, section 'Installing: GPU or CPU-only PyTorch'"
_MARKER = "torch-build.json"


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


def cuda_build_without_gpu() -> bool:
    return torch.version.cuda is not None and not torch.cuda.is_available()


def first_use_notice() -> str | None:
    """The build line the first time this torch version is used here, else None."""
    path = cache_dir() / _MARKER
    try:
        seen = json.loads(path.read_text(encoding="utf-8")).get("torch")
    except (OSError, ValueError, AttributeError):
        seen = None
    if seen == torch.__version__:
        return None
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"torch": torch.__version__}) + "\n", encoding="utf-8")
    line = f"running on {describe_build()}"
    if cuda_build_without_gpu():
        line += (f"; on a machine without a GPU the CPU-only build is several GB smaller and "
                 f"installs faster: see {README_INSTALL}")
    return line
