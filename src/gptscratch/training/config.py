"""The trainer's own configuration section: optimisation, schedule, precision, evaluation.

Frozen and validated when built, like `ModelConfig`; the model never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from gptscratch.errors import require


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimisation, schedule, precision, evaluation and checkpointing."""

    batch_size: int = 32
    grad_accum: int = 1  # micro-batches per optimizer step
    max_iters: int = 2000  # optimizer steps; `epochs` overrides it when set
    epochs: float | None = None
    # Wall-clock budget in seconds (None or 0: none); the LR schedule then follows elapsed time.
    max_time: float | None = None
    learning_rate: float = 1e-3
    min_lr: float = 1e-4  # cosine decay floor
    warmup_iters: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    seed: int = 1337
    # torch.compile: None picks per device (`device.choose_compile`); True / False force it.
    compile: bool | None = None
    # The peak TFLOP/s per process to report MFU against; None: a known GPU's data-sheet bf16
    # peak, else a matmul rate measured once on this machine (`mfu.peak_flops`).
    peak_tflops: float | None = None
    # Fine-tuning: keep these parameters fixed (they are left out of the optimizer). Freezing
    # the embeddings also freezes a tied LM head, which is the same matrix.
    freeze_embeddings: bool = False
    freeze_layers: int = 0  # the first K Transformer blocks
    # Under torchrun: shard parameters, gradients and optimizer state across the processes
    # (FSDP) instead of keeping a full copy on each (DDP). For models that do not fit one GPU.
    fsdp: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters"):
            value = getattr(self, name)
            require(
                isinstance(value, int) and value >= 1,
                f"{name} ({value}) must be a positive integer; try --{name.replace('_', '-')} 1",
            )
        require(
            isinstance(self.freeze_layers, int) and self.freeze_layers >= 0,
            f"freeze_layers ({self.freeze_layers}) must be a whole number >= 0; "
            "try --freeze-layers 0",
        )
        require(self.log_interval >= 1, f"log_interval ({self.log_interval}) must be >= 1")
        require(self.warmup_iters >= 0, f"warmup_iters ({self.warmup_iters}) must be >= 0")
        require(
            self.epochs is None or self.epochs > 0,
            f"epochs ({self.epochs}) must be > 0; try --epochs 1",
        )
        require(
            self.max_time is None or self.max_time >= 0,
            f"max_time ({self.max_time}) must be >= 0 seconds (0: no limit); try --max-time 300",
        )
        require(
            self.learning_rate > 0 and 0 <= self.min_lr <= self.learning_rate,
            f"learning rates must satisfy 0 <= min_lr ({self.min_lr}) <= learning_rate "
            f"({self.learning_rate}) and learning_rate > 0; "
            f"try --min-lr {self.learning_rate / 10:g}",
        )
        require(self.weight_decay >= 0, f"weight_decay ({self.weight_decay}) must be >= 0")
        require(
            0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
            f"beta1 ({self.beta1}) and beta2 ({self.beta2}) must be in [0, 1)",
        )
        require(
            self.peak_tflops is None or self.peak_tflops > 0,
            f"peak_tflops ({self.peak_tflops}) must be > 0; e.g. --peak-tflops 989 for an H100",
        )
        require(self.grad_clip >= 0, f"grad_clip ({self.grad_clip}) must be >= 0 (0 disables)")
        require(
            not (self.fsdp and self.dtype == "float16"),
            "--fsdp trains in float32 or bfloat16 (float16's loss scaling is not wired up for "
            "sharded gradients); use --dtype bfloat16",
        )
        dtypes = ("auto", "float32", "bfloat16", "float16")
        require(
            self.dtype in dtypes,
            f"unknown dtype {self.dtype!r}; choose one of {', '.join(dtypes)}",
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
