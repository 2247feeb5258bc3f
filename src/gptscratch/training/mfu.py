"""Model FLOPs utilisation (MFU), shown next to tokens/s in the progress line: model FLOPs per
token x tokens per second / peak FLOP/s (`peak_flops`). Model FLOPs count only the maths the
model needs (PaLM, Chowdhery et al. 2022, appendix B; as in nanoGPT), not recomputation or
overhead, so MFU compares implementations and machines fairly. `model_flops_utilisation` is the
one place the fraction is taken: a figure above 100 % says the peak is wrong for the device, and
is reported as unknown rather than printed or stored.
"""

from __future__ import annotations

import functools
import logging
import re
import time

import torch

from gptscratch.files import cached_measurement
from gptscratch.model.config import ModelConfig
from gptscratch.runtime.device import machine_key

log = logging.getLogger(__name__)

# Dense (not 2:4-sparse) bf16 tensor-core peaks, TFLOP/s, by exact product name (`gpu_product`
# turns torch.cuda.get_device_name() into one). NVIDIA's data sheets print the sparse figure
# with a footnote; the dense one is half of it. A product's variants differ: the NVL and PCIe
# cards run lower clocks and power than SXM, so each has its own row.
GPU_BF16_PEAK_TFLOPS: dict[str, float] = {
    # H100 Tensor Core GPU data sheet: BF16 1,979 (SXM) / 1,671 (NVL) / 1,513 (PCIe) sparse.
    # The SXM5 board reports itself as "NVIDIA H100 80GB HBM3", hence the bare "H100".
    "H100": 989.0, "H100 SXM5": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0,
    # H200 Tensor Core GPU data sheet: BF16 1,979 (SXM) / 1,671 (NVL) sparse.
    "H200": 989.0, "H200 NVL": 835.0,
    # GH200 Grace Hopper data sheet: its H100 is the SXM part, BF16 1,979 sparse.
    "GH200": 989.0,
    # A100 Tensor Core GPU data sheet: BF16 312 dense (624 sparse), SXM4 and PCIe alike.
    "A100": 312.0, "A100 SXM": 312.0, "A100 SXM4": 312.0, "A100 PCIe": 312.0,
    # L40 data sheet: BF16 181.05 / 362.1 sparse. L40S data sheet: BF16 362.05 / 733 sparse.
    # L4 data sheet: BF16 242 sparse.
    "L40": 181.0, "L40S": 362.0, "L4": 121.0,
    # A10 data sheet: BF16 125 / 250 sparse. The A10G is AWS's variant and has no NVIDIA data
    # sheet: 70 is the figure usually quoted for it, not checked against a sheet.
    "A10": 125.0, "A10G": 70.0,
    # GeForce: the Ada and Ampere architecture white papers (FP16/BF16 with FP32 accumulate).
    "RTX 4090": 165.0, "RTX 3090": 71.0,
    # No bf16 on these: their fp16 tensor cores (V100 data sheet: 125 SXM2, 112 PCIe; T4: 65).
    "V100 SXM2": 125.0, "V100 PCIe": 112.0, "T4": 65.0,
}
# Words of a device name that name the maker, the brand or the memory, not the product.
NAME_NOISE = re.compile(r"^(nvidia|geforce|tesla|\d+gb?|hbm\d*e?)$", re.IGNORECASE)

CEILING_SIZE = 2048  # a square matmul large enough to reach the kernel's steady rate


def flops_per_token(config: ModelConfig, n_params: int) -> float:
    """Training FLOPs per token: 6N for the weight matmuls plus the attention term.

    Each weight does one multiply-add (2 FLOPs) per token forward and two backward (input and
    weight gradients): 6N. Attention's scores and weighted sum add 2 x 2 x T x C a layer
    forward, x3 with the backward: 12 L C T, with T the full context as nanoGPT counts it.
    `n_params`: those in matmuls (`GPT.num_params()`: the tied embedding once, as the head)."""
    return 6.0 * n_params + 12.0 * config.n_layer * config.n_embd * config.block_size


def gpu_product(device_name: str) -> str:
    """The product name in a CUDA device name: the maker, brand and memory words dropped.

    "NVIDIA H100 80GB HBM3" -> "H100", "NVIDIA A100-SXM4-80GB" -> "A100 SXM4",
    "NVIDIA GeForce RTX 4090" -> "RTX 4090", "Tesla V100-PCIE-32GB" -> "V100 PCIE"."""
    words = re.split(r"[\s\-_]+", device_name.strip())
    return " ".join(w for w in words if w and not NAME_NOISE.match(w))


def gpu_peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU in FLOP/s, or None when its product is not in the
    table. The product must equal a table name (case aside), so "L40" is not an "L4" and an
    "H100 NVL" is not an SXM H100."""
    product = gpu_product(device_name).lower()
    for name, tflops in GPU_BF16_PEAK_TFLOPS.items():
        if name.lower() == product:
            return tflops * 1e12
    return None


def model_flops_utilisation(tokens_per_s: float, flops_per_token: float, peak: float,
                            peak_source: str = "") -> float | None:
    """MFU as a fraction of `peak` (FLOP/s), or None where it cannot be told.

    None when there is no peak (0), and None when the fraction is above 1: no device runs
    faster than its peak, so the peak is wrong for it (a matmul ceiling measured in a slow
    moment of a shared machine, or another product's data-sheet figure). That is logged once
    per peak, and the figure is left out rather than printed or stored."""
    if peak <= 0:
        return None
    fraction = tokens_per_s * flops_per_token / peak
    if fraction > 1.0:
        _warn_peak_too_low(peak, peak_source)
        return None
    return fraction


@functools.cache  # once per peak: the progress line asks every few steps
def _warn_peak_too_low(peak: float, peak_source: str) -> None:
    source = f" ({peak_source})" if peak_source else ""
    log.warning("MFU came out above 100 %% against %.3g TFLOP/s%s: that peak is too low for "
                "this device, so MFU is reported as unknown; give the right one in the "
                "peak_tflops setting", peak / 1e12, source)


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


def measured_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """This machine's matmul ceiling for `dtype`, measured once (about a second) and cached in
    `cache_dir()/matmul_ceiling.json`, keyed by device name, thread count, dtype and torch."""
    return cached_measurement("matmul_ceiling.json", machine_key(device, dtype),
                              lambda: measure_matmul_flops(device, dtype))


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
