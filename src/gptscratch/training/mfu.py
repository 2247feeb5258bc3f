"""Model FLOPs utilisation (MFU): how much of the hardware's matmul rate training turns into
model arithmetic.

MFU = (model FLOPs per token x tokens per second) / peak FLOP/s. Model FLOPs count only the
maths the model needs (PaLM, Chowdhery et al. 2022, appendix B; as in nanoGPT), not recomputation
or overhead, so MFU compares implementations and machines fairly. The peak is:
- on a known CUDA GPU, its dense bf16 tensor-core rate from the vendor's data sheet;
- otherwise (CPUs, unknown GPUs) a matmul rate measured once on this machine, in the training
  dtype, and cached in the gptscratch cache folder; or a value given with `--peak-tflops`.
The trainer shows MFU next to tokens/s in its progress line.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from gptscratch.files import atomic_file, cache_dir
from gptscratch.model.config import ModelConfig

# Dense (not 2:4-sparse) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets. Matched
# against torch.cuda.get_device_name(); the first matching entry wins, so the more specific
# names come first.
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

    Each weight is used in one multiply-add (2 FLOPs) per token forward and two backward
    (gradients for inputs and weights): 6N. Attention's scores and weighted sum add
    2 x 2 x T x C per layer forward (T keys of width C per query), times 3 for the backward:
    12 L C T, with T the full context as nanoGPT counts it.

    Args:
        config: the model shape.
        n_params: parameters that take part in matmuls (the tied embedding counts once, as
            the LM head; the position embedding not: `GPT.num_params()`).
    """
    return 6.0 * n_params + 12.0 * config.n_layer * config.n_embd * config.block_size


def gpu_peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU in FLOP/s, or None when the name is not in the table."""
    for key, tflops in GPU_BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, size: int = CEILING_SIZE,
                         repeats: int = 5) -> float:
    """The best rate of a (size x size) @ (size x size) matmul in `dtype`, in FLOP/s.

    Its random inputs come from a generator of its own: drawing them from the global one would
    change a training run's dropout masks depending on whether the ceiling was cached.
    """
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
    """The peak FLOP/s to measure MFU against, and where it comes from (for the log).

    Order: a value the user gave; on CUDA the data-sheet dense bf16 peak of a known GPU (the
    rate that matters, whatever dtype trains); else a measured matmul ceiling in `dtype`.
    """
    if given_tflops:
        return given_tflops * 1e12, "given by --peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        table = gpu_peak_flops(name)
        if table is not None:
            return table, f"{name}'s dense bf16 peak (data sheet)"
    name = str(dtype).removeprefix("torch.")
    return measured_peak_flops(device, dtype), f"a {name} {CEILING_SIZE}^3 matmul measured here"
