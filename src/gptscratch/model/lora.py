"""LoRA: fine-tune a big model by training two small matrices per layer (Hu et al. 2021).

W (out x in) stays frozen and a low-rank change is learned (docs/concepts/lora.md):

    y = x W^T + b  +  (alpha / R) * x A^T B^T        A: (R, in), B: (out, R), R << in, out

B starts at zero, so step 0 is exactly the pretrained model; A starts random, so B's first
gradient (proportional to A x) is not zero; alpha / R keeps a good learning rate across ranks.
`merge_lora` folds the change in, W' = W + (alpha / R) B A. The adapter keeps the layer's names
(`c_attn.weight`) and adds `c_attn.lora_A` and `c_attn.lora_B`, so base weights load as always
and a checkpoint can hold the adapters alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gptscratch.errors import UserError

# The Linear layers (by the end of their names) each of `--lora-targets`' names adapts.
TARGETS: dict[str, tuple[str, ...]] = {
    "attn": ("attn.c_attn", "attn.c_proj"),  # the q, k, v projection and the output
    "mlp": ("mlp.c_fc", "mlp.c_proj"),
    "head": ("lm_head",),
}


class LoRALinear(nn.Linear):
    """A frozen Linear layer plus a trainable low-rank change, (alpha / R) * B A.

    Built from the layer it adapts, sharing its weight and bias (so a tied LM head stays tied
    to the token embedding, which the adapter leaves alone).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=device))
        # nn.Linear's own init (Kaiming-uniform with a = sqrt(5)), as the LoRA paper's code does.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., out). The low-rank path never forms the (out, in) product:
        # (..., in) @ (in, R) @ (R, out) costs R * (in + out) per row instead of in * out.
        y = super().forward(x)  # the frozen layer
        change = (self.lora_dropout(x) @ self.lora_A.t()) @ self.lora_B.t()  # (..., out)
        return y + self.scaling * change

    def merged_weight(self) -> torch.Tensor:
        """W + (alpha / R) B A, in fp32 then cast to the weight's dtype: the layer with the
        change folded in."""
        delta = self.scaling * (self.lora_B.float() @ self.lora_A.float())  # (out, in)
        return (self.weight.float() + delta).to(self.weight.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, alpha={self.alpha:g}")


def target_layers(model: nn.Module, targets: tuple[str, ...]) -> list[tuple[str, nn.Linear]]:
    """The (name, layer) pairs of `model`'s Linear layers that `targets` adapt."""
    ends = tuple(end for t in targets for end in TARGETS[t])
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and (name == "lm_head" and "lm_head" in ends
                                          or name.endswith(tuple("." + e for e in ends)))]


def check_rank(model: nn.Module, rank: int, targets: tuple[str, ...]) -> None:
    """Raise a UserError unless 1 <= rank <= the smallest side of the adapted layers (a larger
    "low-rank" change would have more parameters than the layer, and no more expressive power)."""
    layers = target_layers(model, targets)
    most = min(min(m.in_features, m.out_features) for _, m in layers)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= most:
        raise UserError(f"--lora-rank ({rank}) must be a whole number from 1 to {most} (the "
                        f"smallest side of the adapted layers); try --lora-rank {min(8, most)}")


def add_lora(model: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
             targets: tuple[str, ...] = ("attn",)) -> list[str]:
    """Freeze every parameter of `model` and put a LoRA adapter on each targeted Linear layer
    (in place). Returns the adapted layers' names."""
    check_rank(model, rank, targets)
    model.requires_grad_(False)
    names = []
    for name, layer in target_layers(model, targets):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(layer, rank, alpha, dropout))
        names.append(name)
    return names


# The token tables whose rows a chat template adds (`checkpoints.load.add_token_rows`).
TOKEN_TABLES = ("transformer.wte", "lm_head")
NEW_ROWS = ".new_rows"  # a LoRA checkpoint's tensor of the rows a token table gained


def train_new_rows(model: nn.Module, first: int) -> None:
    """Let a LoRA run train the token rows from id `first` on (a chat template's markers: the
    frozen base never learned them, and rows that all start as one mean could not tell the
    turns apart). The token table (and an untied LM head) is trainable again, but a hook zeroes
    the gradient of the base's rows, so with no weight decay only the new rows move (PEFT's
    `trainable_token_indices` does the same)."""
    model.new_rows_from = first  # type: ignore[assignment]
    for table in _token_tables(model).values():
        table.requires_grad_(True)
        table.register_hook(lambda grad: torch.cat([torch.zeros_like(grad[:first]),
                                                    grad[first:]]))


def _token_tables(model: nn.Module) -> dict[str, nn.Parameter]:
    """The token embedding and an untied LM head's weight, by module name (a tied head is the
    embedding: once)."""
    tables: dict[str, nn.Parameter] = {}
    for name in TOKEN_TABLES:
        weight = model.get_submodule(name).weight
        assert isinstance(weight, nn.Parameter)
        if all(weight is not t for t in tables.values()):
            tables[name] = weight
    return tables


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a LoRA checkpoint holds: the adapters' tensors (`...lora_A`, `...lora_B`) and the
    token rows it trains (`transformer.wte.new_rows`: `train_new_rows`)."""
    state = {n: p.detach() for n, p in model.named_parameters() if is_lora_parameter(n)}
    first = getattr(model, "new_rows_from", None)
    if first is not None:
        for name, table in _token_tables(model).items():
            state[name + NEW_ROWS] = table.detach()[first:]
    return state


@torch.no_grad()
def load_new_rows(model: nn.Module, tensors: dict[str, torch.Tensor]) -> bool:
    """Copy the `NEW_ROWS` tensors of a LoRA checkpoint into the end of their token tables;
    whether there were any."""
    rows = {n.removesuffix(NEW_ROWS): t for n, t in tensors.items() if n.endswith(NEW_ROWS)}
    for name, table in _token_tables(model).items():
        if name in rows:
            table[table.shape[0] - rows[name].shape[0]:] = rows[name]
            model.new_rows_from = table.shape[0] - rows[name].shape[0]  # type: ignore[assignment]
    return bool(rows)


def is_lora_parameter(name: str) -> bool:
    return name.endswith((".lora_A", ".lora_B"))


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer's weight and put a plain Linear back (in place). A
    tied LM head with an adapter gets its own weight (folding into the shared matrix would
    change the token embedding too): the caller's config must then say `tie_embeddings=False`.
    """
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]:
        plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                       device=layer.weight.device, dtype=layer.weight.dtype)
        plain.weight.copy_(layer.merged_weight())
        if layer.bias is not None and plain.bias is not None:
            plain.bias.copy_(layer.bias)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, plain)
    return model
