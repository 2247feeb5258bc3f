"""The model layer's settings, validated when built: errors name the field, value, rule and fix.

`ModelConfig` is a GPT's shape (presets return one; `dataclasses.replace` re-validates).
`SamplingConfig` and `BeamConfig` say how decoding picks tokens, declared once with
`gptscratch.settings`, which makes the CLI flags and the server's request fields from them.
No torch import: the CLI reads these classes to build its flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from gptscratch.errors import UserError, require
from gptscratch.settings import check_settings, setting

ACTIVATIONS = ("gelu_tanh", "gelu", "relu2", "swiglu")
POSITIONS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm")
# Far beyond GPT-2 XL (50,257 ids, 1,024 context, 48 layers, 25 heads, 1,600 wide): they stop a
# mistyped flag or a damaged checkpoint from asking for terabytes.
LIMITS = {"vocab_size": 2**24, "block_size": 2**20, "n_layer": 1024, "n_head": 1024,
          "n_embd": 2**16}


def _whole(name: str) -> str:
    return f"must be a whole number from 1 to {LIMITS[name]:,}"

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


def swiglu_hidden(n_embd: int) -> int:
    """The hidden width of a SwiGLU MLP: 8C/3 rounded up to a multiple of 64.

    Three C x 8C/3 matrices cost what GELU's two C x 4C ones cost (Shazeer 2020, LLaMA); a
    multiple of 64 keeps the matmuls on whole hardware tiles (C = 384: 1,024; C = 768: 2,048).
    """
    return 64 * math.ceil(8 * n_embd / 3 / 64)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a GPT. Letters used in the code: B batch, T time, C = n_embd, H = n_head,
    D = C // H head size, V = vocab_size, L = n_layer."""

    vocab_size: int = setting(65, "the tokenizer's vocabulary (it comes with the data)", low=1,
                              high=LIMITS["vocab_size"], says=_whole("vocab_size"))
    block_size: int = setting(256, "context length in tokens: the longest context the model "
                                   "sees at once (and the KV cache holds)", low=1,
                              high=LIMITS["block_size"], says=_whole("block_size"), example=256)
    n_layer: int = setting(6, "Transformer blocks", low=1, high=LIMITS["n_layer"],
                           says=_whole("n_layer"), example=6)
    n_head: int = setting(6, "attention heads per block", low=1, high=LIMITS["n_head"],
                          says=_whole("n_head"), example=6)
    n_embd: int = setting(384, "embedding width (divisible by n_head)", low=1,
                          high=LIMITS["n_embd"], says=_whole("n_embd"), example=256)
    dropout: float = setting(0.0, "dropout probability", low=0, high=1, high_open=True,
                             example=0.1)
    bias: bool = setting(True, "biases in Linear and LayerNorm layers, as GPT-2 has")
    attention: str = setting("auto", "auto | sdpa | explicit: the attention path (auto: SDPA, "
                                     "or explicit where model/fast.py finds it faster)",
                             choices=("auto", "sdpa", "explicit"), example="auto")
    tie_embeddings: bool = setting(True, "share the token embedding with the LM head, as "
                                         "GPT-2 does (off: Hugging Face models saved untied)")
    activation: str = setting(
        "gelu_tanh", "gelu_tanh (GPT-2's) | gelu (exact; a faster kernel on CPU) | relu2 "
                     "(relu(x)^2, Primer) | swiglu (gated MLP, ~8C/3 wide)",
        choices=ACTIVATIONS, example="gelu_tanh")
    # The modern recipe's options (docs/concepts/modern-recipe.md); each default is GPT-2's.
    positions: str = setting(
        "learned", "learned (GPT-2's position table) | rope (rotary q and k, RoFormer)",
        choices=POSITIONS, example="rope")
    norm: str = setting("layernorm", "layernorm (GPT-2's) | rmsnorm (no mean, no bias)",
                        choices=NORMS, example="rmsnorm")
    qk_norm: bool = setting(False, "RMSNorm each head's queries and keys before attention")
    zero_init_proj: bool = setting(
        False, "start the attention and MLP output projections at zero")
    logit_softcap: float = setting(
        0.0, "bound the logits: X * tanh(logits / X), as Gemma 2 (0: off)", low=0,
        example=30, note=" (0 is off)")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.n_embd % self.n_head:
            up = (self.n_embd // self.n_head + 1) * self.n_head
            raise UserError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                            f"try --n-embd {up} or an --n-head that divides {self.n_embd}")
        D = self.head_size
        if self.positions == "rope" and D % 2:
            raise UserError(
                f"positions 'rope' needs an even head size, but n_embd / n_head = "
                f"{self.n_embd} / {self.n_head} = {D} (rotary turns pairs of channels); try "
                f"--n-embd {self.n_embd + self.n_head} or --positions learned")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_hidden(self) -> int:
        """The MLP's hidden width: 4C (GPT-2's), or `swiglu_hidden(C)` for SwiGLU."""
        return swiglu_hidden(self.n_embd) if self.activation == "swiglu" else 4 * self.n_embd

    @property
    def mlp_fc_out(self) -> int:
        """Outputs of the MLP's first Linear (c_fc): its hidden width, twice for SwiGLU (the
        gate and the up projection share c_fc)."""
        return 2 * self.mlp_hidden if self.activation == "swiglu" else self.mlp_hidden

    def parameter_count(self) -> int:
        """Every parameter of the GPT this config builds (a tied head counted once), known before
        anything is allocated, so a config read from a file can be checked against memory."""
        C, b, hidden = self.n_embd, int(self.bias), self.mlp_hidden
        norm = C * (1 + b) if self.norm == "layernorm" else C  # RMSNorm has a gain only
        fc_out = self.mlp_fc_out
        attn = (C * 3 * C + b * 3 * C) + (C * C + b * C) + 2 * self.head_size * self.qk_norm
        mlp = (C * fc_out + b * fc_out) + (hidden * C + b * C)
        block = 2 * norm + attn + mlp
        head = 0 if self.tie_embeddings else self.vocab_size * C
        table = self.block_size if self.positions == "learned" else 0  # wpe
        return (self.vocab_size + table) * C + self.n_layer * block + norm + head

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


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick each next token (`sampling.py` applies them in this order: penalties,
    temperature, then the filters). The penalties follow CTRL (Keskar et al. 2019) for
    repetition and OpenAI's definitions for frequency and presence."""

    temperature: float = setting(
        0.8, "divides the logits: < 1 sharpens, > 1 flattens; 0 means greedy", low=0,
        example=0.8, note=" (0 is greedy)")
    top_k: int | None = setting(
        None, "sample only among the K most likely tokens (default: all)", low=1, example=50,
        note=", or leave it out to keep all", metavar="K")
    top_p: float = setting(
        1.0, "sample only among the most likely tokens covering P of the probability "
        "(default 1.0: all)", low=0, high=1, low_open=True, example=0.9,
        note=", or 1.0 to keep all", metavar="P")
    min_p: float = setting(
        0.0, "drop tokens less than MIN_P times as likely as the best (default 0)", low=0,
        high=1, example=0.05, note=", or 0 to keep all")
    repetition_penalty: float = setting(
        1.0, "> 1 discourages tokens already in the text, prompt included (default 1.0: none)",
        low=0, high=10, low_open=True, example=1.2, note=" (1.0 is none)")
    frequency_penalty: float = setting(
        0.0, "in [-2, 2]: penalise tokens by how often they were generated", low=-2, high=2,
        example=0.5, note=" (0 is none)")
    presence_penalty: float = setting(
        0.0, "in [-2, 2]: penalise tokens once generated", low=-2, high=2, example=0.5,
        note=" (0 is none)")

    def __post_init__(self) -> None:
        check_settings(self)

    @property
    def uses_penalties(self) -> bool:
        return (self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0
                or self.presence_penalty != 0.0)


@dataclass(frozen=True)
class BeamConfig:
    """Beam search (`beam_search.py`): how many hypotheses run, how their scores weigh
    length (1.0 = mean log-probability, 0 = plain sum), and when to stop."""

    beams: int = setting(1, "beam search with N beams (deterministic; default 1: sampling)",
                         low=1, example=4, note=" (1 means no beam search)", metavar="N")
    length_penalty: float = setting(1.0, "beam search: > 0 favours longer texts (default 1.0)",
                                    low=-10, high=10, example=1.0)
    early_stopping: bool = setting(
        True, "beam search: go on until no running beam can win", flag="--no-early-stopping")

    def __post_init__(self) -> None:
        check_settings(self)
