"""The trainer's configuration: four frozen sections validated when built (optimisation, run
length, system, fine-tuning), held by `TrainConfig`; each part of the trainer reads only its own.
Field names are unique across sections, so `TrainConfig.from_dict` / `to_dict` / `replace` speak
a flat form (`learning_rate`), which checkpoints store and presets and the CLI use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from gptscratch.errors import SettingError, require
from gptscratch.model.config import parse_targets
from gptscratch.settings import check_settings, setting

OPTIMIZERS = ("adamw", "muon")  # `optimizer.make_optimizer`
LOGGERS = ("jsonl", "tensorboard", "csv", "wandb")  # jsonl (metrics.jsonl) is always on


@dataclass(frozen=True)
class OptimConfig:
    """How each step learns: batch, the optimizer (AdamW, or Muon with AdamW), the
    learning-rate schedule, clipping."""

    batch_size: int = setting(32, "sequences per micro-batch", low=1, example=1)
    grad_accum: int = setting(1, "micro-batches per optimizer step", low=1, example=1)
    learning_rate: float = setting(1e-3, "peak learning rate", low=0, low_open=True, example=1e-3)
    min_lr: float = setting(1e-4, "the cosine decay's floor", low=0, example=1e-4)
    warmup_iters: int = setting(100, "steps of linear warmup", low=0, example=100)
    weight_decay: float = setting(0.1, "AdamW's (and Muon's) weight decay", low=0, example=0.1)
    beta1: float = setting(0.9, "AdamW's beta1", low=0, high=1, high_open=True, example=0.9)
    beta2: float = setting(0.99, "AdamW's beta2", low=0, high=1, high_open=True, example=0.99)
    grad_clip: float = setting(1.0, "clip the gradient norm to this (0: no clipping)", low=0,
                               example=1.0)
    max_bad_steps: int = setting(
        5, "non-finite steps in a row (each skipped) that end the run", low=1, example=5)
    # muon: `muon.py`; weight_decay applies to both kinds, at each one's rate.
    optimizer: str = setting(
        "adamw", "adamw | muon (Muon for the blocks' weight matrices, AdamW for the rest)",
        choices=OPTIMIZERS, example="adamw")
    # modded-nanogpt's 0.02; warmup and decay scale it as they scale learning_rate.
    muon_lr: float = setting(
        0.02, "Muon's peak learning rate, scaled by the same schedule as --learning-rate",
        low=0, low_open=True, example=0.02)
    muon_momentum: float = setting(0.95, "Muon's Nesterov momentum (modded-nanogpt's 0.95)",
                                   low=0, high=1, high_open=True, example=0.95)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.min_lr > self.learning_rate:
            raise SettingError("min_lr", self.min_lr,
                               f"must be <= learning_rate ({self.learning_rate})",
                               f"{self.learning_rate / 10:g}")


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

    max_iters: int = setting(2000, "optimizer steps (epochs, when set, overrides it)", low=1,
                             example=1)
    epochs: float | None = setting(None, "passes over the training data", low=0, low_open=True,
                                   example=1)
    max_time: float | None = setting(
        None, "wall-clock budget in seconds, which the LR schedule then follows (0: none)",
        low=0, example=300)
    # training/sizing.py; a run's checkpoints keep the shape chosen, and a resumed run keeps it.
    size: str = setting(
        "fixed", "fixed: the shape given (the preset's, or --n-layer/--n-embd/--n-head) | "
        "auto: time a few shapes here and take the one --max-time suits best",
        choices=("fixed", "auto"))
    eval_interval: int = setting(
        0, "steps between evaluations (0: about 20 evaluations over the run's planned length, "
           "which a --max-time budget plans from the speed of its first steps)", low=0,
        example=100)
    eval_iters: int = setting(20, "batches each evaluation averages", low=1, example=1)
    log_interval: int = setting(10, "steps between progress lines", low=1, example=1)
    seed: int = setting(1337, "the seed of everything random")
    loggers: tuple[str, ...] = setting(
        (), "also log to tensorboard, csv or wandb (repeatable, or comma-separated)",
        flag="--logger")
    # A sample to read, not a corpus: drawn at the first, every 4th and the last evaluation.
    eval_sample_tokens: int = setting(
        100, "tokens sampled at the first, every 4th and the last evaluation, for loggers and "
             "the report (0: none)", low=0, high=10_000, example=100)

    def __post_init__(self) -> None:
        check_settings(self)
        _check_loggers(self)


@dataclass(frozen=True)
class SystemConfig:
    """Where and how the maths runs: device, precision, compilation, processes. (dtype and
    device are checked where they are resolved, against the machine: `runtime`.)"""

    dtype: str = setting("auto", "auto | float32 | bfloat16 | float16 (`runtime.precision`)")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N | mps")
    compile: bool | None = setting(None, "train through torch.compile (default: by device)")
    peak_tflops: float | None = setting(
        None, "peak TFLOP/s per process to report MFU against (default: a known GPU's, or a "
              "matmul measured here)", low=0, low_open=True, example=989)
    # FSDP instead of DDP's full copy on each process: for models that do not fit one GPU.
    fsdp: bool = setting(
        False, "under torchrun: shard weights, gradients and optimizer state across processes")
    activation_checkpointing: bool = setting(
        False, "recompute each block's activations in the backward pass: less memory, ~1/3 "
               "more compute")
    fit: bool = setting(
        False, "if a step would not fit the free memory: smaller micro-batches with gradient "
               "accumulation (the same sequences a step), then activation checkpointing")

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning: parameters kept fixed (left out of the optimizer), or LoRA adapters
    (`model.lora`) trained on a frozen model."""

    freeze_embeddings: bool = setting(
        False, "fine-tuning: keep the embeddings (and a tied LM head) fixed")
    freeze_layers: int = setting(0, "fine-tuning: keep the first K Transformer blocks fixed",
                                 low=0, says="must be a whole number >= 0", example=0)
    lora_rank: int = setting(0, "fine-tuning with --init-from: train rank-R LoRA adapters on a "
                                "frozen model (0: off)", low=0,
                             says="must be a whole number >= 1 (0: no LoRA)", example=8)
    # 16 at rank 8 is LitGPT's and common usage.
    lora_alpha: float = setting(16.0, "LoRA: the adapters' change is scaled by alpha / rank",
                                low=0, high=1e6, low_open=True, high_open=True, example=16)
    lora_dropout: float = setting(0.0, "LoRA: dropout on the adapters' input", low=0, high=1,
                                  high_open=True, example=0.05)
    lora_targets: str = setting(
        "attn", "LoRA: the layers to adapt, comma-separated: attn, mlp, head")
    train_on: str = setting(
        "answers", "conversation data: the tokens the loss is taken on: the assistant's "
        "answers, or all", choices=("answers", "all"))
    strict: bool = setting(
        False, "conversation data: refuse a conversation longer than the context instead of "
        "leaving it out")
    # `data.tokenizers.chat_template` (its STYLES): also `prepare --chat`'s. A model or data
    # that has a template keeps it (`run.py`).
    chat_template: str = setting(
        "tokens", "conversation data: the turns as tokens (markers added to the vocabulary) | "
        "text (plain text the tokenizer already spells: no new ids, for tools that cannot add "
        "tokens)", choices=("tokens", "text"))

    def __post_init__(self) -> None:
        check_settings(self)
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
