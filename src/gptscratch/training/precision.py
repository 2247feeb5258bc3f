"""Mixed precision: the one place that decides the compute dtype for a device.

Weights and optimizer state stay in fp32; the forward and backward matmuls run in the chosen
dtype under `torch.autocast`. bf16 keeps fp32's exponent range, so it needs no loss scaling;
fp16 does (a GradScaler), and is only offered on CUDA.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from gptscratch.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AMX-BF16 or AVX512-BF16).

    With AMX, bf16 matmuls ran about 5x faster than fp32 here; without such instructions bf16
    is emulated and slower than fp32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def cpu_supports_bf16() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and bool(
        torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype
    device_type: str
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """The context to run forward passes in (a no-op for fp32)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


# Below this width the matmuls are too small for bf16 to pay for autocast's casts on CPU
# (measured: a 4-layer d=128 model ran 29 ms/step in fp32 and 44 ms in bf16 here).
CPU_BF16_MIN_EMBD = 256


def choose_precision(requested: str, device: torch.device, n_embd: int) -> Precision:
    """Resolve `--dtype auto|float32|bfloat16|float16` for a device and model width."""
    kind = device.type
    if requested == "auto":
        if kind == "cuda":
            if torch.cuda.is_bf16_supported():
                return Precision(torch.bfloat16, kind, "CUDA GPU with bf16: fast and needs no "
                                 "loss scaling")
            return Precision(torch.float16, kind, "CUDA GPU without bf16: fp16 with a GradScaler")
        if kind == "cpu" and cpu_has_fast_bf16() and cpu_supports_bf16():
            if n_embd >= CPU_BF16_MIN_EMBD:
                return Precision(torch.bfloat16, kind, "CPU with AMX/AVX512-BF16: bf16 matmuls "
                                 "run several times faster than fp32")
            return Precision(torch.float32, kind, f"n_embd {n_embd} < {CPU_BF16_MIN_EMBD}: "
                             "matmuls too small for bf16 autocast to pay off on CPU")
        return Precision(torch.float32, kind, f"no fast low-precision matmuls on {kind}")
    if requested not in DTYPES:
        raise UserError(f"unknown dtype {requested!r}; choose auto, float32, bfloat16 or float16")
    dtype = DTYPES[requested]
    if dtype == torch.float16 and kind != "cuda":
        raise UserError(f"float16 training needs a CUDA GPU, not {kind}; use --dtype bfloat16 "
                        "or float32")
    if dtype == torch.bfloat16:
        if kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("this CUDA GPU cannot do bfloat16; use --dtype float16 or float32")
        if kind == "cpu" and not cpu_supports_bf16():
            raise UserError("this CPU cannot do bfloat16; use --dtype float32")
        if kind == "mps":
            raise UserError("bfloat16 autocast is not supported on mps here; use --dtype float32")
    return Precision(dtype, kind, "requested")


# Generation with bf16 weights, measured here (benchmarks/generation.py, batch 1): the 124M
# GPT-2 shape (n_embd 768) decoded 1.4x faster than in fp32, while the 256-wide preset, whose
# steps are dominated by per-operation overhead, ran 1.35x slower.
CPU_BF16_INFERENCE_MIN_EMBD = 512


def choose_inference_dtype(requested: str, device: torch.device,
                           n_embd: int) -> tuple[torch.dtype, str]:
    """Resolve the weights' dtype for generation (`--dtype auto|float32|bfloat16|float16`).

    Returns the dtype and why it was chosen. Unlike training, inference casts the weights
    themselves: there are no gradients to keep in fp32, and half the bytes to read per token.
    """
    kind = device.type
    if requested == "auto":
        if kind == "cuda":
            if torch.cuda.is_bf16_supported():
                return torch.bfloat16, "CUDA GPU with bf16"
            return torch.float16, "CUDA GPU without bf16"
        if kind == "cpu" and cpu_has_fast_bf16() and cpu_supports_bf16():
            if n_embd >= CPU_BF16_INFERENCE_MIN_EMBD:
                return torch.bfloat16, "CPU with AMX/AVX512-BF16 and a model wide enough to gain"
            return torch.float32, (f"n_embd {n_embd} < {CPU_BF16_INFERENCE_MIN_EMBD}: bf16 "
                                   "decoding is slower than fp32 for small models on CPU")
        return torch.float32, f"no fast low-precision matmuls on {kind}"
    if requested not in DTYPES:
        raise UserError(f"unknown dtype {requested!r}; choose auto, float32, bfloat16 or float16")
    dtype = DTYPES[requested]
    if dtype == torch.float16 and kind == "cpu":
        raise UserError("float16 generation on a CPU is emulated and slow; use --dtype "
                        "bfloat16 or float32")
    if dtype == torch.bfloat16 and kind == "cpu" and not cpu_supports_bf16():
        raise UserError("this CPU cannot do bfloat16; use --dtype float32")
    return dtype, "requested"
