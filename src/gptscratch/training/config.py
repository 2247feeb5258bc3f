"""The trainer's configuration: four frozen sections validated when built (optimisation, run
length, system, fine-tuning), held by `TrainConfig`; each part of the trainer reads only its own.
Field names are unique across sections, so `TrainConfig.from_dict` / `to_dict` / `replace` speak
a flat form (`learning_rate`), which checkpoints store and presets and the CLI use.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from gptscratch.errors import did_you_mean, require
from gptscratch.model.config import parse_targets
from gptscratch.settings import setting

OPTIMIZERS = ("adamw", "muon")  # `optimizer.make_optimizer`


def _positive(section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        require(isinstance(value, int) and value >= 1,
                f"{name} ({value}) must be a positive integer; try --{name.replace('_', '-')} 1")


@dataclass(frozen=True)
class OptimConfig:
    """How each step learns: batch, the optimizer (AdamW, or Muon with AdamW), the
    learning-rate schedule, clipping."""

    batch_size: int = 32
    grad_accum: int = 1  # micro-batches per optimizer step
    learning_rate: float = 1e-3
    min_lr: float = 1e-4  # cosine decay floor
    warmup_iters: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    max_bad_steps: int = 5  # non-finite steps (each skipped) in a row that end the run
    # muon: `muon.py`; weight_decay applies to both kinds, at each one's rate.
    optimizer: str = setting(
        "adamw", "adamw | muon (Muon for the blocks' weight matrices, AdamW for the rest)")
    # modded-nanogpt's 0.02; warmup and decay scale it as they scale learning_rate.
    muon_lr: float = setting(
        0.02, "Muon's peak learning rate, scaled by the same schedule as --learning-rate")
    muon_momentum: float = setting(0.95, "Muon's Nesterov momentum (modded-nanogpt's 0.95)")

    def __post_init__(self) -> None:
        _positive(self, "batch_size", "grad_accum", "max_bad_steps")
        require(self.optimizer in OPTIMIZERS,
                f"optimizer ({self.optimizer!r}) must be one of {', '.join(OPTIMIZERS)}"
                f"{did_you_mean(str(self.optimizer), OPTIMIZERS)}; try --optimizer adamw")
        require(isinstance(self.muon_lr, (int, float)) and 0 < self.muon_lr < math.inf,
                f"muon_lr ({self.muon_lr}) must be > 0; try --muon-lr 0.02")
        require(isinstance(self.muon_momentum, (int, float)) and 0 <= self.muon_momentum < 1,
                f"muon_momentum ({self.muon_momentum}) must be in [0, 1); "
                "try --muon-momentum 0.95")
        require(self.warmup_iters >= 0, f"warmup_iters ({self.warmup_iters}) must be >= 0")
        require(self.learning_rate > 0 and 0 <= self.min_lr <= self.learning_rate,
                f"learning rates must satisfy 0 <= min_lr ({self.min_lr}) <= learning_rate "
                f"({self.learning_rate}) and learning_rate > 0; "
                f"try --min-lr {self.learning_rate / 10:g}")
        require(self.weight_decay >= 0, f"weight_decay ({self.weight_decay}) must be >= 0")
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
                f"beta1 ({self.beta1}) and beta2 ({self.beta2}) must be in [0, 1)")
        require(self.grad_clip >= 0, f"grad_clip ({self.grad_clip}) must be >= 0 (0 disables)")


LOGGERS = ("jsonl", "tensorboard", "csv", "wandb")  # jsonl (metrics.jsonl) is always on
MAX_EVAL_SAMPLE_TOKENS = 10_000  # a sample to read, not a corpus: it runs at every evaluation


def _check_loggers(run: Any) -> None:
    """`loggers` as a tuple of known names (from a JSON list or "a,b" strings; no repeats)."""
    given = [run.loggers] if isinstance(run.loggers, str) else list(run.loggers)
    names: list[str] = []
    for item in given:
        require(isinstance(item, str), f"loggers ({run.loggers!r}) must be logger names")
        names += [n.strip() for n in item.split(",") if n.strip()]
    names = list(dict.fromkeys(names))
    for name in names:
        require(name in LOGGERS, f"unknown logger {name!r}; choose from {', '.join(LOGGERS)} "
                                 "(e.g. --logger tensorboard)")
    object.__setattr__(run, "loggers", tuple(names))  # frozen: normalised once, when built


@dataclass(frozen=True)
class RunConfig:
    """How long to train, how often to evaluate and log (and where), and the random seed."""

    max_iters: int = 2000  # optimizer steps; `epochs` overrides it when set
    epochs: float | None = None
    # Wall-clock budget in seconds (None or 0: none); the LR schedule then follows elapsed time.
    max_time: float | None = None
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    seed: int = 1337
    loggers: tuple[str, ...] = setting(
        (), "also log to tensorboard, csv or wandb (repeatable, or comma-separated)",
        flag="--logger")
    eval_sample_tokens: int = setting(
        100, "tokens sampled at each evaluation for loggers and report (0: none)")

    def __post_init__(self) -> None:
        _positive(self, "max_iters", "eval_interval", "eval_iters")
        _check_loggers(self)
        require(isinstance(self.eval_sample_tokens, int)
                and not isinstance(self.eval_sample_tokens, bool)
                and 0 <= self.eval_sample_tokens <= MAX_EVAL_SAMPLE_TOKENS,
                f"eval_sample_tokens ({self.eval_sample_tokens}) must be a whole number from 0 "
                f"(none) to {MAX_EVAL_SAMPLE_TOKENS:,}; try --eval-sample-tokens 100")
        require(self.log_interval >= 1, f"log_interval ({self.log_interval}) must be >= 1")
        require(self.epochs is None or self.epochs > 0,
                f"epochs ({self.epochs}) must be > 0; try --epochs 1")
        require(self.max_time is None or self.max_time >= 0,
                f"max_time ({self.max_time}) must be >= 0 seconds (0: no limit); "
                "try --max-time 300")


@dataclass(frozen=True)
class SystemConfig:
    """Where and how the maths runs: device, precision, compilation, processes."""

    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (`runtime.precision`)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    compile: bool | None = None  # None: by device (`runtime.compile.choose_compile`)
    peak_tflops: float | None = None  # per process, for MFU; None: `mfu.peak_flops` finds it
    # FSDP instead of DDP's full copy on each process: for models that do not fit one GPU.
    fsdp: bool = setting(
        False, "under torchrun: shard weights, gradients and optimizer state across processes")
    activation_checkpointing: bool = setting(
        False, "recompute each block's activations in the backward pass: less memory, ~1/3 "
               "more compute")

    def __post_init__(self) -> None:
        # dtype and device are checked where they are resolved, against the machine (`runtime`).
        require(self.peak_tflops is None or self.peak_tflops > 0,
                f"peak_tflops ({self.peak_tflops}) must be > 0; e.g. --peak-tflops 989 for an H100")


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning: parameters kept fixed (left out of the optimizer), or LoRA adapters
    (`model.lora`) trained on a frozen model."""

    freeze_embeddings: bool = setting(
        False, "fine-tuning: keep the embeddings (and a tied LM head) fixed")
    freeze_layers: int = setting(0, "fine-tuning: keep the first K Transformer blocks fixed")
    lora_rank: int = setting(0, "fine-tuning with --init-from: train rank-R LoRA adapters on a "
                                "frozen model (0: off)")
    # 16 at rank 8 is LitGPT's and common usage.
    lora_alpha: float = setting(16.0, "LoRA: the adapters' change is scaled by alpha / rank")
    lora_dropout: float = setting(0.0, "LoRA: dropout on the adapters' input")
    lora_targets: str = setting(
        "attn", "LoRA: the layers to adapt, comma-separated: attn, mlp, head")

    def __post_init__(self) -> None:
        require(isinstance(self.freeze_layers, int) and self.freeze_layers >= 0,
                f"freeze_layers ({self.freeze_layers}) must be a whole number >= 0; "
                "try --freeze-layers 0")
        require(isinstance(self.lora_rank, int) and not isinstance(self.lora_rank, bool)
                and self.lora_rank >= 0,
                f"lora_rank ({self.lora_rank}) must be a whole number >= 1 (0: no LoRA); "
                "try --lora-rank 8")
        require(isinstance(self.lora_alpha, (int, float)) and 0 < self.lora_alpha < 1e6,
                f"lora_alpha ({self.lora_alpha}) must be > 0; try --lora-alpha 16")
        require(isinstance(self.lora_dropout, (int, float)) and 0 <= self.lora_dropout < 1,
                f"lora_dropout ({self.lora_dropout}) must be in [0, 1); try --lora-dropout 0.05")
        if self.lora_rank:
            parse_targets(self.lora_targets)  # names checked now, the rank against the model


SECTIONS: dict[str, type[Any]] = {
    "optim": OptimConfig, "run": RunConfig, "system": SystemConfig, "finetune": FinetuneConfig}


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the four sections."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    @staticmethod
    def field_names() -> dict[str, str]:
        """Every flat field name, with the section it belongs to."""
        return {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from flat field names (unknown names, e.g. from a newer version, are ignored)."""
        return cls().replace(**{k: v for k, v in d.items() if k in cls.field_names()})

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with fields changed by their flat names, each section validated again."""
        owner = self.field_names()
        unknown = sorted(set(changes) - set(owner))
        require(not unknown, f"unknown training setting(s) {unknown}")
        sections = {}
        for name in SECTIONS:
            mine = {k: v for k, v in changes.items() if owner[k] == name}
            sections[name] = dataclasses.replace(getattr(self, name), **mine)
        return TrainConfig(**sections)

    def to_dict(self) -> dict[str, Any]:
        """The flat form: every field by name (what checkpoints store)."""
        return {f.name: getattr(getattr(self, section), f.name)
                for section, cls in SECTIONS.items() for f in fields(cls)}
