"""LoRA checkpoints: the adapters alone, plus where their base model is and its hash.

A LoRA run's checkpoint is an ordinary checkpoint directory whose `model.safetensors` holds
only the `lora_A` / `lora_B` tensors (a few MB for GPT-2 small) and whose `checkpoint.json`
has a `lora` entry: the rank, alpha, dropout and targets, the base model's source (a
gptscratch checkpoint or Hugging Face folder as an absolute path, or a hub name) and the
sha256 of the base's weights (`state_hash`). Loading it loads the base, checks the hash (the
adapters only mean something on the exact weights they were trained on), adds the adapters
(`model.lora.add_lora`) and loads them. `merge_checkpoint` folds them in for good.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors
import safetensors.torch
import torch

from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig, parse_targets
from gptscratch.model.gpt import GPT
from gptscratch.model.lora import add_lora, merge_lora

if TYPE_CHECKING:
    from gptscratch.checkpoints.checkpoint import Checkpoint


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes, in name order: the same
    weights give the same hash whichever file format they were read from."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def base_source(init_from: str | Path) -> str:
    """How a LoRA checkpoint names its base: an existing path made absolute (so the run can
    be used from any folder), a hub name as it is."""
    path = Path(init_from).expanduser()
    return str(path.resolve()) if path.exists() else str(init_from)


def lora_meta(rank: int, alpha: float, dropout: float, targets: str, source: str,
              digest: str) -> dict[str, Any]:
    """The `lora` entry of a LoRA checkpoint's metadata."""
    return {"rank": rank, "alpha": alpha, "dropout": dropout,
            "targets": ",".join(parse_targets(targets)), "base": source, "base_sha256": digest}


def is_lora_checkpoint(meta: Mapping[str, Any]) -> bool:
    return isinstance(meta.get("lora"), dict)


def load_base_state(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """The base model's weights (our names, fp32, the full position table), checked against
    the hash the LoRA checkpoint recorded.

    Raises:
        UserError: the base is missing or unreadable, or its weights are not the ones the
            adapters were trained on.
    """
    from gptscratch.checkpoints.init_from import load_pretrained  # it reads checkpoints too

    lora = ckpt.meta["lora"]
    source, digest = str(lora.get("base", "")), str(lora.get("base_sha256", ""))
    try:
        base = load_pretrained(source)
    except UserError as e:
        raise UserError(f"the LoRA checkpoint '{ckpt.path}' needs its base model '{source}', "
                        f"which cannot be loaded ({e}); put the base back there, or merge "
                        "the adapters where it exists (gptscratch merge-lora)") from None
    if state_hash(base.state_dict) != digest:
        raise UserError(f"the base model '{source}' is not the one the LoRA checkpoint "
                        f"'{ckpt.path}' was trained on (its weights' sha256 differs); restore "
                        "that base, or train the adapters again on this one")
    return base.state_dict


def add_adapters(model: GPT, lora: Mapping[str, Any]) -> GPT:
    """Put the adapters a `lora` metadata entry describes on `model` (zero change until their
    weights are loaded)."""
    add_lora(model, int(lora["rank"]), float(lora["alpha"]), float(lora.get("dropout", 0.0)),
             parse_targets(str(lora["targets"])))
    return model


def load_adapter_weights(ckpt: Checkpoint, model: GPT) -> None:
    """Load the checkpoint's adapter tensors into a model that has the same adapters.

    Raises:
        UserError: the file is unreadable or its tensors do not match the adapters.
    """
    from gptscratch.checkpoints.checkpoint import WEIGHTS

    try:
        tensors = safetensors.torch.load_file(str(ckpt.path / WEIGHTS))
    except (safetensors.SafetensorError, OSError) as e:
        raise UserError(f"cannot read the adapters in '{ckpt.path}' ({e}); the file is "
                        "corrupted: use another checkpoint or retrain") from None
    own = {n: p for n, p in model.named_parameters() if n.endswith((".lora_A", ".lora_B"))}
    wrong = sorted(set(own) ^ set(tensors)) or [
        n for n in own if own[n].shape != tensors[n].shape]
    if wrong:
        raise UserError(f"the adapters in '{ckpt.path}' do not match its LoRA settings (at "
                        f"{wrong[0]}); the checkpoint is damaged: use another one or retrain")
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(tensors[name])


def build_lora_model(ckpt: Checkpoint) -> GPT:
    """Base + adapters, on the CPU in fp32: what sampling, evaluation and resume run."""
    config = ckpt.model_config
    state = load_base_state(ckpt)
    if "transformer.wpe.weight" in state:  # rotary positions have no table
        state["transformer.wpe.weight"] = state["transformer.wpe.weight"][:config.block_size]
    model = GPT(config)
    model.load_state_dict(state)
    add_adapters(model, ckpt.meta["lora"])
    load_adapter_weights(ckpt, model)
    return model


def merged_config(ckpt: Checkpoint) -> ModelConfig:
    """The model config of the merged model: an adapted LM head gets its own weight."""
    config = ckpt.model_config
    if "head" in parse_targets(str(ckpt.meta["lora"]["targets"])) and config.tie_embeddings:
        return ModelConfig.from_dict({**config.to_dict(), "tie_embeddings": False})
    return config


def merged_model(ckpt: Checkpoint) -> tuple[ModelConfig, GPT]:
    """A plain GPT with the adapters folded into its weights, and its config."""
    model = build_lora_model(ckpt)
    merge_lora(model)
    config = merged_config(ckpt)
    model.config = config
    return config, model


def merge_checkpoint(ckpt_path: Path | str, out_dir: Path | str) -> Path:
    """Write a LoRA checkpoint's base + adapters as one plain checkpoint (weights only), which
    samples at the base model's speed and exports to Hugging Face.

    Raises:
        UserError: `out_dir` exists and is not empty, or `ckpt_path` is not a LoRA checkpoint.
    """
    from gptscratch.checkpoints.checkpoint import (
        check_new_folder,
        load_checkpoint,
        save_checkpoint,
    )

    out = Path(out_dir)
    check_new_folder(out)
    ckpt = load_checkpoint(ckpt_path)
    if not is_lora_checkpoint(ckpt.meta):
        raise UserError(f"'{ckpt.path}' is not a LoRA checkpoint (it has no adapters to "
                        "merge); it can be sampled or exported as it is")
    config, model = merged_model(ckpt)
    tokenizer = ckpt.tokenizer()
    keep = ("step", "train_loss", "val_loss", "best_val_loss", "elapsed", "tokenizer_kind",
            "tokenizer_fingerprint", "data_dir", "data_key", "init_from")
    meta = {**{k: ckpt.meta[k] for k in keep if k in ckpt.meta},
            "model_config": config.to_dict(), "merged_from": str(ckpt.path.resolve()),
            "merged_lora": ckpt.meta["lora"]}
    save_checkpoint(out, model, tokenizer, meta)
    return out
