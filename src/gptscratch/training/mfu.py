"""Model FLOPs utilisation (MFU), shown next to tokens/s in the progress line: model FLOPs per
token x tokens per second / peak FLOP/s (`peak_flops`). Model FLOPs count only the maths the
model needs (PaLM, Chowdhery et al. 2022, appendix B; as in nanoGPT), not recomputation or
overhead, so MFU compares implementations and machines fairly.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from gptscratch.files import atomic_file, cache_dir
from gptscratch.model.config import ModelConfig

# Dense (not 2:4-sparse) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets, matched
# against torch.cuda.get_device_name(): the first match wins, so specific names come first.
GPU_BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM and NVL
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),  # fp16 tensor cores (V100 has no bf16)
    ("T4", 65.0),  # fp16 tensor cores (T4 has no bf16)
)

CEILING_SIZE = 2048  # a square matmul large enough to reach the kernel's steady rate


def flops_per_token(config: ModelConfig, n_params: int) -> float:
    """Training FLOPs per token: 6N for the weight matmuls plus the attention term.

    Each weight does one multiply-add (2 FLOPs) per token forward and two backward (input and
    weight gradients): 6N. Attention's scores and weighted sum add 2 x 2 x T x C a layer
    forward, x3 with the backward: 12 L C T, with T the full context as nanoGPT counts it.
    `n_params`: those in matmuls (`GPT.num_params()`: the tied embedding once, as the head)."""
    return 6.0 * n_params + 12.0 * config.n_layer * config.n_embd * config.block_size


def gpu_peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU in FLOP/s, or None when the name is not in the table."""
    for key, tflops in GPU_BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, size: int = CEILING_SIZE,
                         repeats: int = 5) -> float:
    """The best rate of a (size x size) @ (size x size) matmul in `dtype`, in FLOP/s. Its inputs
    come from its own generator: the global one would change a run's dropout masks depending on
    whether the ceiling was cached."""
    gen = torch.Generator(device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=gen).to(dtype)
    b = torch.randn(size, size, device=device, generator=gen).to(dtype)
    best = float("inf")
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        (a @ b).sum().item()  # .item() waits for the result on any device
        if i >= 2:  # the first runs pay for allocation and kernel selection
            best = min(best, time.perf_counter() - t)
    return 2.0 * size**3 / best


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ceiling_key(device: torch.device, dtype: torch.dtype) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return f"{device.type}|{name}|{threads} threads|{dtype}|torch {torch.__version__}"


def measured_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """This machine's matmul ceiling for `dtype`, measured once (about a second) and cached in
    `cache_dir()/matmul_ceiling.json`, keyed by device name, thread count, dtype and torch."""
    path = cache_dir() / "matmul_ceiling.json"
    key = _ceiling_key(device, dtype)
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    if not isinstance(table, dict):
        table = {}
    if key in table:
        return float(table[key])
    flops = measure_matmul_flops(device, dtype)
    table[key] = flops
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(table, indent=2) + "\n")
    return flops


def peak_flops(device: torch.device, dtype: torch.dtype,
               given_tflops: float | None = None) -> tuple[float, str]:
    """The peak FLOP/s to measure MFU against, and its source for the log: a value the user
    gave; on CUDA a known GPU's data-sheet dense bf16 peak (the rate that matters, whatever
    dtype trains); else a matmul ceiling in `dtype` measured once on this machine (cached)."""
    if given_tflops:
        return given_tflops * 1e12, "given by --peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        table = gpu_peak_flops(name)
        if table is not None:
            return table, f"{name}'s dense bf16 peak (data sheet)"
    name = str(dtype).removeprefix("torch.")
    return measured_peak_flops(device, dtype), f"a {name} {CEILING_SIZE}^3 matmul measured here"
