"""LoRA checkpoints: the adapters alone, plus where their base model is and its hash.

A LoRA run's `model.safetensors` holds only the `lora_A` / `lora_B` tensors (a few MB for GPT-2
small); its `checkpoint.json` has a `lora` entry naming the base and the sha256 of its weights,
as the adapters only mean something on those exact weights. `load.py` puts the two together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig, parse_targets
from gptscratch.model.gpt import GPT
from gptscratch.model.lora import NEW_ROWS, add_lora, is_lora_parameter, load_new_rows


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and bytes: the same from any format."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def base_source(init_from: str | Path) -> str:
    """A base as stored: an existing path made absolute (usable from any folder), else as is."""
    path = Path(init_from).expanduser()
    return str(path.resolve()) if path.exists() else str(init_from)


def lora_meta(rank: int, alpha: float, dropout: float, targets: str, source: str,
              digest: str, new_rows_from: int | None = None) -> dict[str, Any]:
    """The `lora` entry of a LoRA checkpoint's metadata; `new_rows_from`: the first token id
    the base lacks (a chat template's markers), whose rows the run trains beside the adapters."""
    meta = {"rank": rank, "alpha": alpha, "dropout": dropout,
            "targets": ",".join(parse_targets(targets)), "base": source, "base_sha256": digest}
    return meta if new_rows_from is None else {**meta, "new_rows_from": new_rows_from}


def is_lora_checkpoint(meta: Mapping[str, Any]) -> bool:
    return isinstance(meta.get("lora"), dict)


def check_base(state: Mapping[str, torch.Tensor], lora: Mapping[str, Any], where: Path) -> None:
    """Refuse a base whose weights are not the ones the adapters were trained on."""
    if state_hash(state) != str(lora.get("base_sha256", "")):
        raise UserError(f"the base model '{lora.get('base')}' is not the one the LoRA checkpoint "
                        f"'{where}' was trained on (its weights' sha256 differs); restore "
                        "that base, or train the adapters again on this one")


def add_adapters(model: GPT, lora: Mapping[str, Any]) -> GPT:
    """Put the adapters a `lora` entry describes on `model` (no change until weights load)."""
    add_lora(model, int(lora["rank"]), float(lora["alpha"]), float(lora.get("dropout", 0.0)),
             parse_targets(str(lora["targets"])))
    return model


def load_adapter_weights(model: GPT, tensors: Mapping[str, torch.Tensor], where: Path) -> None:
    """Copy a LoRA checkpoint's adapter tensors (and the token rows it trained:
    `lora.load_new_rows`) into `model`; UserError if they do not match."""
    own = {n: p for n, p in model.named_parameters() if is_lora_parameter(n)}
    rows = {n: t for n, t in tensors.items() if n.endswith(NEW_ROWS)}
    tensors = {n: t for n, t in tensors.items() if n not in rows}
    wrong = sorted(set(own) ^ set(tensors)) or [
        n for n in own if own[n].shape != tensors[n].shape]
    if wrong:
        raise UserError(f"the adapters in '{where}' do not match its LoRA settings (at "
                        f"{wrong[0]}); the checkpoint is damaged: use another one or retrain")
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(tensors[name])
    load_new_rows(model, rows)


def merged_config(config: ModelConfig, lora: Mapping[str, Any]) -> ModelConfig:
    """The config once the adapters are folded in: an adapted LM head gets its own weight."""
    if "head" in parse_targets(str(lora["targets"])) and config.tie_embeddings:
        return ModelConfig.from_dict({**config.to_dict(), "tie_embeddings": False})
    return config
