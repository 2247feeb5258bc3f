"""A model from one format written in another: `import-hf`, `export-hf` and `merge-lora`.

Each writes a new (or empty) folder atomically, checked before anything is read: a failure
leaves nothing behind.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gptscratch.checkpoints.adapters import is_lora_checkpoint
from gptscratch.checkpoints.checkpoint import check_new_folder, load_checkpoint, save_checkpoint
from gptscratch.checkpoints.huggingface import read_hf_model, write_hf_model
from gptscratch.checkpoints.load import build_model, load_model, merged
from gptscratch.errors import UserError
from gptscratch.files import atomic_dir

log = logging.getLogger("gptscratch.hf")


def import_hf(source: str, out_dir: Path | str) -> Path:
    """Convert a Hugging Face GPT-2 (folder or hub name) into checkpoint `out_dir`, returned.

    It has no training state: sample, evaluate, export or fine-tune it (`train(init_from=...)`).
    """
    out = Path(out_dir)
    check_new_folder(out)
    hf = read_hf_model(source)
    model = build_model(hf.config, hf.state_dict)
    meta = {"model_config": hf.config.to_dict(), "step": 0,
            "tokenizer_kind": hf.tokenizer.kind,
            "tokenizer_fingerprint": hf.tokenizer.fingerprint(), "imported_from": source}
    save_checkpoint(out, model, hf.tokenizer, meta)
    log.info("imported %s (%s parameters, %s tokenizer) into %s", source,
             f"{model.num_params():,}", hf.tokenizer.kind, out)
    return out


def export_hf(ckpt: Path | str, out_dir: Path | str) -> Path:
    """Write a gptscratch checkpoint as Hugging Face GPT-2 folder `out_dir`, returned:
    `AutoModelForCausalLM.from_pretrained(out_dir)` computes the same logits."""
    out = Path(out_dir)
    check_new_folder(out)
    checkpoint = load_checkpoint(ckpt)
    if is_lora_checkpoint(checkpoint.meta):
        raise UserError(f"'{checkpoint.path}' holds LoRA adapters, not a whole model; fold them "
                        f"into their base first: gptscratch merge-lora --ckpt {ckpt} --out DIR, "
                        "then export DIR")
    loaded = load_model(checkpoint)
    with atomic_dir(out) as tmp:  # `out` is absent or an empty folder, checked above
        write_hf_model(tmp, loaded.model.state_dict(), checkpoint.model_config, loaded.tokenizer)
    log.info("exported %s to %s", checkpoint.path, out)
    return out


def merge_lora(ckpt: Path | str, out_dir: Path | str) -> Path:
    """Write a LoRA checkpoint's base + adapters as one plain checkpoint (weights only), which
    samples at the base model's speed and exports to Hugging Face."""
    out = Path(out_dir)
    check_new_folder(out)
    checkpoint = load_checkpoint(ckpt)
    if not is_lora_checkpoint(checkpoint.meta):
        raise UserError(f"'{checkpoint.path}' is not a LoRA checkpoint (it has no adapters to "
                        "merge); it can be sampled or exported as it is")
    loaded = merged(load_model(checkpoint))
    keep = ("step", "train_loss", "val_loss", "best_val_loss", "elapsed", "tokenizer_kind",
            "tokenizer_fingerprint", "data_dir", "data_key", "init_from")
    meta = {**{k: checkpoint.meta[k] for k in keep if k in checkpoint.meta},
            "model_config": loaded.model.config.to_dict(),
            "merged_from": str(checkpoint.path.resolve()), "merged_lora": checkpoint.meta["lora"]}
    save_checkpoint(out, loaded.model, loaded.tokenizer, meta)
    log.info("merged the adapters of %s into %s", ckpt, out)
    return out
