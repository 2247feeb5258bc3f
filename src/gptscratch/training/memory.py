"""Will this run fit? The memory a training step needs, estimated before anything is built:
weights, gradients, optimizer state and activations, each a plain formula of the configs (not
counting allocator slack, compiled graphs or the data loader). Full fine-tuning costs ~16 bytes
a parameter (GPT-2 XL: ~25 GB before activations); LoRA trains ~0.1-1 % of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from gptscratch.model.config import ModelConfig, parse_targets
from gptscratch.model.lora import TARGETS
from gptscratch.training.config import TrainConfig

# Values kept for the backward pass per token, per layer, in units of C: the inputs of the
# LayerNorms, the four projections and GELU, and q, k, v and the attention output.
ACTIVATIONS_PER_LAYER = 16


def _block_linears(model: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) features of each Linear layer inside a block, by its name there."""
    C = model.n_embd
    return {"attn.c_attn": (C, 3 * C), "attn.c_proj": (C, C), "mlp.c_fc": (C, model.mlp_fc_out),
            "mlp.c_proj": (model.mlp_hidden, C)}


def lora_parameter_count(model: ModelConfig, rank: int, targets: str) -> int:
    """Parameters of the LoRA adapters: R * (in + out) for each adapted Linear layer."""
    sides = _block_linears(model)
    total = 0
    for target in parse_targets(targets):
        for layer in TARGETS[target]:
            if layer == "lm_head":
                total += rank * (model.n_embd + model.vocab_size)
            else:
                total += model.n_layer * rank * sum(sides[layer])
    return total


def block_matrix_count(model: ModelConfig) -> int:
    """Parameters of the blocks' Linear weights (attention's c_attn and c_proj, the MLP's c_fc
    and c_proj): the matrices LoRA freezes and `--optimizer muon` hands to Muon."""
    return model.n_layer * sum(n_in * n_out for n_in, n_out in _block_linears(model).values())


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step needs, by part."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def describe(self) -> str:
        parts = [("weights", self.weights), ("gradients", self.gradients),
                 ("optimizer state", self.optimizer), ("activations", self.activations)]
        return " + ".join(f"{name} {_size(n)}" for name, n in parts) + \
            f" = {_size(self.total)}"


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def estimate_training_memory(model: ModelConfig, config: TrainConfig, world_size: int = 1,
                             low_precision: bool = False) -> MemoryEstimate:
    """The memory a training step of `model` under `config` needs on one process.

    Args:
        world_size: processes; FSDP splits weights, gradients and optimizer state across them.
        low_precision: the run autocasts to bf16 / fp16, so activations are mostly 2-byte and
            LoRA's frozen matrices are kept in bf16.
    """
    params = model.parameter_count()
    ft = config.finetune
    C, L, T = model.n_embd, model.n_layer, model.block_size
    B = config.optim.batch_size
    if ft.lora_rank:
        trainable = lora_parameter_count(model, ft.lora_rank, ft.lora_targets)
        frozen = block_matrix_count(model)
        weights = 4 * params + 4 * trainable - (2 * frozen if low_precision else 0)
        moments = 8 * trainable  # the adapters keep AdamW under either --optimizer
    else:
        trainable = params
        weights = 4 * params
        muon = block_matrix_count(model) if config.optim.optimizer == "muon" else 0
        moments = 8 * (trainable - muon) + 4 * muon  # Muon: one momentum buffer a matrix
    shards = world_size if config.system.fsdp else 1
    per_token_layer = (C if config.system.activation_checkpointing
                       else ACTIVATIONS_PER_LAYER * C)
    scores = model.n_head * T if model.attention == "explicit" else 0  # the score matrix
    value_bytes = 3 if low_precision else 4  # a mix of bf16 copies and fp32 values
    kept = B * T * (L * per_token_layer + scores) * value_bytes
    if config.system.activation_checkpointing:  # one block recomputed at a time
        kept += B * T * (ACTIVATIONS_PER_LAYER * C + scores) * value_bytes
    logits = 3 * B * T * model.vocab_size * 4  # logits, their softmax in the loss, the gradient
    return MemoryEstimate(weights // shards, 4 * trainable // shards, moments // shards,
                          kept + logits)


def fit_to_memory(model: ModelConfig, config: TrainConfig, free: int, world_size: int = 1,
                  low_precision: bool = False) -> TrainConfig | None:
    """The cheapest way to train `config`'s step in `free` bytes, the step unchanged: the
    same sequences a step (batch_size x grad_accum), split into the largest micro-batch that
    fits, first without activation checkpointing (no extra compute; smaller micro-batches only
    use the cores less well), then with it (one more forward pass). `config` itself where it
    fits; None where even one sequence a micro-batch with checkpointing does not."""
    optim = config.optim
    sequences = optim.batch_size * optim.grad_accum
    sizes = [b for b in range(optim.batch_size, 0, -1) if sequences % b == 0]
    for checkpointing in dict.fromkeys((config.system.activation_checkpointing, True)):
        for b in sizes:
            candidate = config.replace(batch_size=b, grad_accum=sequences // b,
                                       activation_checkpointing=checkpointing)
            need = estimate_training_memory(model, candidate, world_size, low_precision).total
            if need <= free:
                return candidate
    return None


def memory_fix(config: TrainConfig, fine_tuning: bool) -> str:
    """What to change to need less memory, for the refusal's message."""
    options = []
    if fine_tuning and not config.finetune.lora_rank:
        options.append("--lora-rank 8 (train adapters, not every weight)")
    if not config.system.activation_checkpointing:
        options.append("--activation-checkpointing")
    options.append(f"a smaller --batch-size (now {config.optim.batch_size}) or --block-size")
    return "use " + ", ".join(options[:-1]) + (" or " if len(options) > 1 else "") + options[-1]
