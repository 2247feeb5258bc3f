"""Precision: the one place that decides the dtype a model computes in on a device.

Training keeps fp32 weights and optimizer state and runs matmuls under `torch.autocast` (bf16
keeps fp32's range and needs no loss scaling; fp16 needs a GradScaler, on CUDA only).
Inference casts the weights themselves: half the bytes to read per generated token.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from gptscratch.errors import UserError
from gptscratch.runtime.cpu import cpu_has_fast_bf16, cpu_supports_bf16

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The narrowest model for which bf16 pays on a CPU with AMX. Training: below 256 wide the
# matmuls are too small to pay for autocast's casts (a 4-layer d=128 model ran 29 ms/step in
# fp32 and 44 ms in bf16 here). Inference (benchmarks/generation.py, batch 1): the 124M GPT-2
# shape (n_embd 768) decoded 1.4x faster in bf16, while the 256-wide preset, whose steps are
# dominated by per-operation overhead, ran 1.35x slower.
CPU_BF16_MIN_EMBD = 256
CPU_BF16_INFERENCE_MIN_EMBD = 512


@dataclass(frozen=True)
class Precision:
    """A chosen dtype on a kind of device, and why it was chosen (for the log)."""

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


def choose_precision(requested: str, device: torch.device, n_embd: int,
                     for_inference: bool = False) -> Precision:
    """Resolve `--dtype auto|float32|bfloat16|float16` for a device and model width.

    `auto` picks the fastest dtype measured for the device (a narrow model, `n_embd`, gains
    nothing from bf16 on a CPU). `for_inference`: the weights' dtype for generation, not
    autocast's in training (the same rule, with its own CPU width floor and device checks).

    Raises:
        UserError: an unknown dtype, or one this device cannot run.
    """
    if requested == "auto":
        dtype, reason = _auto_dtype(device.type, n_embd, for_inference)
        return Precision(dtype, device.type, reason)
    return Precision(_checked_dtype(requested, device.type, for_inference), device.type,
                     "requested")


def _auto_dtype(kind: str, n_embd: int, for_inference: bool) -> tuple[torch.dtype, str]:
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "CUDA GPU with bf16: fast and needs no loss scaling"
        return torch.float16, "CUDA GPU without bf16: fp16 (with a GradScaler to train)"
    if kind == "cpu" and cpu_has_fast_bf16() and cpu_supports_bf16():
        floor = CPU_BF16_INFERENCE_MIN_EMBD if for_inference else CPU_BF16_MIN_EMBD
        if n_embd >= floor:
            return torch.bfloat16, ("CPU with AMX/AVX512-BF16: bf16 matmuls run several times "
                                    "faster than fp32")
        return torch.float32, (f"n_embd {n_embd} < {floor}: matmuls too small for bf16 to pay "
                               "off on CPU")
    return torch.float32, f"no fast low-precision matmuls on {kind}"


def _checked_dtype(requested: str, kind: str, for_inference: bool) -> torch.dtype:
    if requested not in DTYPES:
        raise UserError(f"unknown dtype {requested!r}; choose auto, float32, bfloat16 or float16")
    dtype = DTYPES[requested]
    if dtype == torch.float16 and kind != "cuda":
        if not for_inference:
            raise UserError(f"float16 training needs a CUDA GPU, not {kind}; use --dtype "
                            "bfloat16 or float32")
        if kind == "cpu":
            raise UserError("float16 generation on a CPU is emulated and slow; use --dtype "
                            "bfloat16 or float32")
    if dtype == torch.bfloat16:
        if kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("this CUDA GPU cannot do bfloat16; use --dtype float16 or float32")
        if kind == "cpu" and not cpu_supports_bf16():
            raise UserError("this CPU cannot do bfloat16; use --dtype float32")
        if kind == "mps" and not for_inference:
            raise UserError("bfloat16 autocast is not supported on mps here; use --dtype float32")
    return dtype
