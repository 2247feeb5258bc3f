"""Checkpoints as plain data, written atomically; the trainer saves them, `load.py` reads them.

A checkpoint is a directory: model.safetensors (the weights; a LoRA run's: its adapters only),
checkpoint.json (configs, step, losses, every file's sha256), tokenizer.json, and state.pt
(optimizer, scaler, RNG states, data position; loads with weights_only=True). A run holds
`latest/` (resume from here) and `best/` (lowest val loss). Every earlier version loads: fields
added to `ModelConfig` since default to GPT-2's value.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from gptscratch.data.tokenizers import Tokenizer, load_tokenizer, save_tokenizer
from gptscratch.errors import UserError
from gptscratch.files import atomic_dir, old_version, sha256_file
from gptscratch.model.config import ModelConfig
from gptscratch.model.lora import has_lora, lora_state_dict

FORMAT_VERSION = 1
# What every checkpoint's model config states (later fields have defaults for older files).
REQUIRED_SHAPE = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
WEIGHTS, META = "model.safetensors", "checkpoint.json"
TOKENIZER, STATE = "tokenizer.json", "state.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile (`_orig_mod`) or DDP (`module`) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_checkpoint(dest: Path, model: nn.Module, tokenizer: Tokenizer, meta: dict[str, Any],
                    state: dict[str, Any] | None = None) -> None:
    """Write checkpoint `dest` (e.g. run/latest) atomically: a crash leaves the old one whole.

    `meta` holds JSON facts (model_config, train_config, step, losses...); `state` the optimizer
    / scaler / RNG tensors and plain values for an exact resume.
    """
    with atomic_dir(Path(dest)) as tmp:
        if has_lora(unwrap(model)):  # a LoRA run: the adapters alone (`adapters.py`)
            safetensors.torch.save_file(
                {n: t.contiguous() for n, t in lora_state_dict(unwrap(model)).items()},
                str(tmp / WEIGHTS), metadata={"format": "pt"})
        else:
            # save_model (not save_file) copes with the tied embedding / LM head weights.
            safetensors.torch.save_model(unwrap(model), str(tmp / WEIGHTS),
                                         metadata={"format": "pt"})
        save_tokenizer(tokenizer, tmp / TOKENIZER)
        if state is not None:
            with open(tmp / STATE, "wb") as f:  # a Python file: a failed write keeps its errno
                torch.save(state, f)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        full = {"format_version": FORMAT_VERSION, **meta, "saved_at": time.time(), "files": files}
        (tmp / META).write_text(json.dumps(full, indent=2) + "\n")


def check_new_folder(out: Path) -> None:
    """Refuse (UserError) an output folder that is not new or empty: nothing is replaced."""
    if out.name in ("", ".."):  # "", "." and ".." name folders that exist already
        raise UserError(f"--out '{out}' names no new folder; give the name of one to create")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"'{out}' already exists and is not an empty folder; choose a new --out "
                        "or remove it")


def link_checkpoint(src: Path, dest: Path) -> None:
    """Copy checkpoint `src` to `dest` atomically, hard-linked where possible (files are never
    modified in place, so sharing them is safe)."""
    with atomic_dir(dest) as tmp:
        for f in src.iterdir():
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)


def resolve_checkpoint(path: Path | str, prefer: str = "best") -> Path:
    """The checkpoint directory `path` is, or its run's best/ (latest/ if preferred or no best)."""
    path = Path(path)
    if (path / META).exists():
        return path
    order = [prefer, "latest", "best"]
    for name in order:
        for candidate in (path / name, old_version(path / name)):
            if (candidate / META).exists():
                return candidate
    if not path.exists():
        raise UserError(f"checkpoint '{path}' not found{_nearest_checkpoint(path)}; give a run "
                        "directory made by `gptscratch train --out DIR` or one of its "
                        "checkpoint folders")
    raise UserError(f"no checkpoint in '{path}' (no {META} in it, its latest/ or best/); "
                    "train one with `gptscratch train --out DIR` first")


def _nearest_checkpoint(path: Path, most: int = 1000) -> str:
    """" (did you mean DIR?)" for the folder beside missing `path` whose name is closest to
    it and that holds a checkpoint (a run folder or a checkpoint folder), or "" if none does;
    looks at no more than `most` entries."""
    try:
        beside = list(itertools.islice(path.parent.iterdir(), most))
    except OSError:
        return ""
    held = [d.name for d in beside if d.is_dir() and any(
        (d / name / META).exists() for name in ("", "best", "latest"))]
    close = difflib.get_close_matches(path.name, held, n=1, cutoff=0.6)
    return f" (did you mean {path.parent / close[0]}?)" if close else ""


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint directory and its metadata."""

    path: Path
    meta: dict[str, Any]

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.meta["model_config"])

    def tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.path / TOKENIZER)

    def weights(self) -> dict[str, torch.Tensor]:
        """model.safetensors' tensors (a LoRA run's: adapters only) on the CPU, or UserError."""
        try:
            return safetensors.torch.load_file(str(self.path / WEIGHTS))
        except (safetensors.SafetensorError, OSError) as e:
            raise UserError(f"cannot read weights in '{self.path}' ({e}); the file is "
                            "corrupted: use another checkpoint or retrain") from None

    def training_state(self) -> dict[str, Any]:
        if not (self.path / STATE).exists():
            raise UserError(f"checkpoint '{self.path}' has no {STATE} (weights only); "
                            "it can be sampled or fine-tuned but not resumed")
        state: dict[str, Any] = torch.load(self.path / STATE, map_location="cpu", weights_only=True)
        return state


def load_checkpoint(path: Path | str, prefer: str = "best", verify: bool = True) -> Checkpoint:
    """Find, read and check a checkpoint (UserError if missing, damaged or not ours); verify=False
    skips the files' sha256s, for a caller that reads the metadata now and loads it later."""
    ckpt_dir = resolve_checkpoint(path, prefer)
    try:
        meta = json.loads((ckpt_dir / META).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"checkpoint '{ckpt_dir}' has an unreadable {META} ({e}); "
                        "it is corrupted: use another checkpoint or retrain") from None
    _check_meta(meta, ckpt_dir / META)
    for name, digest in meta["files"].items() if verify else ():
        f = ckpt_dir / name
        if not f.is_file():
            raise UserError(f"checkpoint '{ckpt_dir}' is missing {name}; it is incomplete: "
                            "use another checkpoint or retrain")
        if sha256_file(f) != digest:
            raise UserError(f"checkpoint file '{f}' is truncated or corrupted (sha256 mismatch); "
                            "use another checkpoint (e.g. best/ or latest/) or retrain")
    return Checkpoint(ckpt_dir, meta)


def _check_meta(meta: Any, where: Path) -> None:
    """The metadata must be ours and whole: only our file names (never a path outside the
    checkpoint), each with a sha256; the model config in range; numbers that are numbers."""
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise UserError(f"'{where}' is not a gptscratch checkpoint file; point --ckpt at a "
                        "folder written by gptscratch train or import-hf")
    files = meta["files"]
    bad = [n for n in files if n not in (WEIGHTS, TOKENIZER, STATE)
           or not isinstance(files[n], str) or len(files[n]) != 64]
    missing = [n for n in (WEIGHTS, TOKENIZER) if n not in files]
    if bad or missing:
        what = (f"lists {bad[0]!r:.80} among its files" if bad
                else f"does not list {missing[0]} among its files")
        raise UserError(f"'{where}' {what}; it is damaged or not gptscratch's: use another "
                        "checkpoint or retrain")
    shape = meta.get("model_config")
    missing_shape = [k for k in REQUIRED_SHAPE if not isinstance(shape, dict) or k not in shape]
    if missing_shape:
        raise UserError(f"'{where}' has no {missing_shape[0]} in its model_config; it is "
                        "damaged: use another checkpoint or retrain")
    ModelConfig.from_dict(shape)  # types and ranges
    for key in ("step", "train_loss", "val_loss", "best_val_loss", "elapsed"):
        value = meta.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"'{where}' has {key} = {value!r:.60}, not a number; it is damaged")
    lora = meta.get("lora")
    if lora is not None and not (
            isinstance(lora, dict) and isinstance(lora.get("rank"), int)
            and isinstance(lora.get("alpha"), (int, float)) and isinstance(lora.get("base"), str)
            and isinstance(lora.get("base_sha256"), str) and isinstance(lora.get("targets"), str)):
        raise UserError(f"'{where}' has a damaged lora entry; use another checkpoint or retrain")
    if not isinstance(meta.get("data_dir", ""), str):
        raise UserError(f"'{where}' has a data_dir that is not a path; it is damaged")
