"""The model's own configuration section: the shape of a GPT, validated when built.

Presets (`gptscratch.training.presets`) return one of these; the CLI overrides single fields
with `dataclasses.replace`, which re-runs validation. Errors name the field, the value, the rule
and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from gptscratch.errors import UserError, require

ACTIVATIONS = ("gelu_tanh", "gelu")
# Upper bounds far beyond any model this toolkit trains (GPT-2 XL: 50,257 ids, 1,024 context,
# 48 layers, 25 heads, 1,600 wide), which stop a mistyped flag or a damaged checkpoint from
# asking for terabytes.
LIMITS = {"vocab_size": 2**24, "block_size": 2**20, "n_layer": 1024, "n_head": 1024,
          "n_embd": 2**16}


# What `--lora-targets` may name (`model.lora.TARGETS` says which layers each adapts). Here,
# with no torch import, so the trainer's config can check the names as it is built.
LORA_TARGETS = ("attn", "mlp", "head")


def parse_targets(spec: str) -> tuple[str, ...]:
    """`"attn,mlp"` -> ("attn", "mlp"), in LORA_TARGETS' order, each named once.

    Raises:
        UserError: a name that is not a target (the valid ones are listed), or none at all.
    """
    names = [n.strip() for n in str(spec).split(",") if n.strip()]
    unknown = [n for n in names if n not in LORA_TARGETS]
    if unknown or not names:
        raise UserError(f"--lora-targets {spec!r}: {unknown[0] if unknown else 'nothing'} is "
                        f"not a LoRA target; choose from {', '.join(LORA_TARGETS)} "
                        "(comma-separated, e.g. --lora-targets attn,mlp)")
    return tuple(n for n in LORA_TARGETS if n in names)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a GPT. Letters used in the code: B batch, T time, C = n_embd, H = n_head,
    D = C // H head size, V = vocab_size, L = n_layer."""

    vocab_size: int = 65
    block_size: int = 256  # longest context the model can see (learned position embeddings)
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms, as GPT-2 has
    # "auto": the fused SDPA kernel, except under bf16 autocast on CPU where the explicit path
    # trained faster here; "sdpa" or "explicit" force one path.
    attention: str = "auto"
    # The LM head shares the token embedding's weight, as in GPT-2. Hugging Face GPT-2 models
    # saved with tie_word_embeddings=false have their own head; this lets them load.
    tie_embeddings: bool = True
    # The MLP's GELU: "gelu_tanh", GPT-2's tanh approximation (what its weights were trained
    # with), or "gelu", the exact x * Phi(x) (as in nanoGPT and HF's "gelu" models), whose
    # kernel runs ~3x faster on CPU (though the shakespeare-char preset ended worse with it).
    # Checkpoints saved before this field existed are GPT-2 style: "gelu_tanh".
    activation: str = "gelu_tanh"

    def __post_init__(self) -> None:
        for name, most in LIMITS.items():
            value = getattr(self, name)
            require(
                isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most,
                f"{name} ({value!r}) must be a whole number from 1 to {most:,}; "
                f"try --{name.replace('_', '-')} {min(most, 256)}",
            )
        for name in ("bias", "tie_embeddings"):
            require(isinstance(getattr(self, name), bool),
                    f"{name} ({getattr(self, name)!r}) must be true or false")
        if self.n_embd % self.n_head:
            up = (self.n_embd // self.n_head + 1) * self.n_head
            raise UserError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"try --n-embd {up} or an --n-head that divides {self.n_embd}"
            )
        require(
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
            f"dropout ({self.dropout!r}) must be in [0, 1); try --dropout 0.1",
        )
        require(
            self.attention in ("auto", "sdpa", "explicit"),
            f"attention ({self.attention!r}) must be auto, sdpa or explicit; try --attention auto",
        )
        require(
            self.activation in ACTIVATIONS,
            f"activation ({self.activation!r}) must be {' or '.join(ACTIVATIONS)}; "
            "try --activation gelu_tanh",
        )

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def parameter_count(self) -> int:
        """Every parameter of the GPT this config builds (a tied head counted once), known
        before anything is allocated: a config read from a file can be checked against the
        memory it needs."""
        C, b = self.n_embd, int(self.bias)
        norm = C * (1 + b)
        block = 2 * norm + (C * 3 * C + b * 3 * C) + (C * C + b * C) + (C * 4 * C + b * 4 * C) \
            + (4 * C * C + b * C)
        head = 0 if self.tie_embeddings else self.vocab_size * C
        return (self.vocab_size + self.block_size) * C + self.n_layer * block + norm + head

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Any) -> ModelConfig:
        """Rebuild from `to_dict()`'s form (unknown names, from a newer version, are ignored).

        Raises:
            UserError: not a dict, or a field of the wrong type or out of range.
        """
        require(isinstance(d, dict), f"a model config must be a JSON object, not {d!r:.60}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
