"""Hugging Face GPT-2 checkpoints: import into a gptscratch checkpoint, export back.

Import reads a local Hugging Face folder (config.json with model.safetensors, sharded
safetensors, or pytorch_model.bin loaded with `torch.load(weights_only=True)`, which never runs
pickled code) or downloads a hub name such as `gpt2` when online, maps it onto our GPT with
`hf_weights.py`, and saves a normal checkpoint (`checkpoint.save_checkpoint`).
Export writes config.json, model.safetensors and the tokenizer files that
`transformers.AutoModelForCausalLM` / `AutoTokenizer.from_pretrained` load. Every output is
built in a temporary folder and renamed into place (`files.atomic_dir`): a failure leaves
nothing behind.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from gptscratch.checkpoints.adapters import is_lora_checkpoint
from gptscratch.checkpoints.checkpoint import check_new_folder, load_checkpoint, save_checkpoint
from gptscratch.checkpoints.hf_weights import (
    hf_config_from_model,
    model_config_from_hf,
    state_dict_from_hf,
    state_dict_to_hf,
)
from gptscratch.checkpoints.pretrained import Pretrained
from gptscratch.data.tokenizers import GPT2Tokenizer
from gptscratch.data.tokenizers.gpt2 import GPT2_VOCAB_SIZE
from gptscratch.data.tokenizers.hf_files import save_hf_tokenizer, tokenizer_from_hf_dir
from gptscratch.errors import UserError
from gptscratch.files import atomic_dir
from gptscratch.hub import go_offline_if_unreachable, hub_offline
from gptscratch.model.gpt import GPT

log = logging.getLogger("gptscratch.hf")

CONFIG, SAFETENSORS, PT_BIN = "config.json", "model.safetensors", "pytorch_model.bin"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ["tokenizer.json", "vocab.json", "merges.txt"]
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def read_hf_model(source: str) -> Pretrained:
    """Read a Hugging Face GPT-2 from a local folder or, online, a hub name.

    Raises:
        UserError: a missing folder or config, a model that is not GPT-2, weights that do not
            match the config, an unreadable (e.g. truncated) weights file, or a hub name that
            cannot be fetched (offline: at once, without retries).
    """
    folder = locate_hf_model(source)
    where = f"'{folder / CONFIG}'"
    try:
        hf_config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {where} ({e}); it must be a Hugging Face config.json"
                        ) from None
    if not isinstance(hf_config, dict):
        raise UserError(f"{where} is not a Hugging Face config.json (not a JSON object)")
    config = model_config_from_hf(hf_config, where)
    state = state_dict_from_hf(read_hf_tensors(folder), config, f"the weights in '{folder}'")
    tokenizer = tokenizer_from_hf_dir(folder)
    if tokenizer is None:
        if config.vocab_size != GPT2_VOCAB_SIZE:
            raise UserError(
                f"'{folder}' has no tokenizer files ({', '.join(TOKENIZER_FILES)}) and its "
                f"vocab_size ({config.vocab_size}) is not GPT-2's ({GPT2_VOCAB_SIZE}); save the "
                "model's tokenizer into it with tokenizer.save_pretrained")
        log.debug("'%s' has no tokenizer files; using GPT-2's tokenizer", folder)
        tokenizer = GPT2Tokenizer()
    if tokenizer.vocab_size != config.vocab_size:
        raise UserError(
            f"the tokenizer in '{folder}' has {tokenizer.vocab_size} ids but config.json has "
            f"vocab_size {config.vocab_size}; gptscratch needs them equal")
    return Pretrained(config, state, tokenizer, source)


def locate_hf_model(source: str) -> Path:
    """The local folder holding a Hugging Face model: `source` itself, or its hub download."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"'{source}' is a file; give the folder that holds its {CONFIG}")
        if not (path / CONFIG).is_file():
            raise UserError(f"'{source}' has no {CONFIG}; give a Hugging Face model folder "
                            "(written by save_pretrained) or a hub name such as gpt2")
        return path
    if not _HUB_NAME.fullmatch(source):
        raise UserError(f"'{source}' is neither a folder nor a Hugging Face hub name; give a "
                        "folder with config.json or a name such as openai-community/gpt2")
    return _download(source)


def _download(name: str) -> Path:
    """Fetch a hub model's config, weights and tokenizer files (safetensors preferred)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"'{name}' is not a local folder, and hub downloads need the "
                        "optional huggingface_hub: pip install -c constraints.txt -e '.[hf]'"
                        ) from None
    go_offline_if_unreachable()  # offline: fail now rather than retry for ~20 s
    patterns = [CONFIG, "*.safetensors", SAFETENSORS_INDEX, *TOKENIZER_FILES]
    try:
        folder = Path(snapshot_download(name, allow_patterns=patterns))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(name, allow_patterns=[*patterns, PT_BIN]))
    except Exception as e:  # the hub client raises many types for one cause: this name
        kind = type(e).__name__
        if hub_offline() and ("offline" in repr(e).lower() or "LocalEntry" in kind):
            raise UserError(f"'{name}' is not a local folder and not in the Hugging Face cache, "
                            "and the hub is unreachable (offline); connect to the internet or "
                            "give a local folder with config.json") from None
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UserError(f"cannot fetch '{name}' from the Hugging Face hub ({kind}: {first}); "
                        "check the name (e.g. openai-community/gpt2-medium)") from None
    if not (folder / CONFIG).is_file():
        raise UserError(f"hub model '{name}' has no {CONFIG}; it is not a transformers model")
    return folder


def read_hf_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face checkpoint folder, by their stored names."""
    index = folder / SAFETENSORS_INDEX
    if (folder / SAFETENSORS).is_file():
        files = [folder / SAFETENSORS]
    elif index.is_file():
        try:
            shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise UserError(f"cannot read '{index}' ({type(e).__name__}); the shard index is "
                            "damaged: download the model again") from None
        files = [folder / f for f in sorted(set(shards))]
    elif (folder / PT_BIN).is_file():
        return _read_pytorch_bin(folder / PT_BIN)
    else:
        raise UserError(f"'{folder}' has no {SAFETENSORS} or {PT_BIN}; save the model with "
                        "transformers' save_pretrained (TensorFlow / Flax weights are not read)")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors.update(safetensors.torch.load_file(f))
        except (safetensors.SafetensorError, OSError) as e:
            first = (str(e).strip().splitlines() or [""])[0][:160]
            raise UserError(f"cannot read '{f}' ({first}); the file is truncated or corrupted: "
                            "download or save it again") from None
    return tensors


def _read_pytorch_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        # weights_only=True: unpickles tensors and plain containers only, never code.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the offending Python object in a line "... Unsupported global: X ...".
        found = re.search(r"Unsupported global: [^\s]+ ?[^\s]*", str(e))
        what = f" ({found.group(0).rstrip('.')})" if found else ""
        raise UserError(f"refusing '{path}': it holds pickled Python objects besides tensors"
                        f"{what}, and loading them could run code; convert it to "
                        "model.safetensors where you trust it") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UserError(f"cannot read '{path}' ({first}); the file is truncated or corrupted: "
                        "download or save it again") from None
    if not isinstance(loaded, dict) or not all(isinstance(t, torch.Tensor)
                                               for t in loaded.values()):
        raise UserError(f"'{path}' is not a state dict of tensors; save the model with "
                        "transformers' save_pretrained")
    return {str(k): v for k, v in loaded.items()}


def import_hf(source: str, out_dir: Path | str) -> Path:
    """Convert a Hugging Face GPT-2 (folder or hub name) into a gptscratch checkpoint.

    The checkpoint holds weights, config and tokenizer but no training state: sample from it,
    evaluate it, export it, or fine-tune it with `train(init_from=...)`.

    Returns:
        The checkpoint folder (`out_dir`).
    """
    out = Path(out_dir)
    check_new_folder(out)
    hf = read_hf_model(source)
    # On the meta device no memory is allocated and no random init runs (a 1.5B model would
    # spend seconds on it); assign=True then adopts the loaded tensors as the parameters.
    with torch.device("meta"):
        model = GPT(hf.config)
    model.load_state_dict(hf.state_dict, assign=True)
    meta = {"model_config": hf.config.to_dict(), "step": 0,
            "tokenizer_kind": hf.tokenizer.kind,
            "tokenizer_fingerprint": hf.tokenizer.fingerprint(), "imported_from": source}
    save_checkpoint(out, model, hf.tokenizer, meta)
    log.info("imported %s (%s parameters, %s tokenizer) into %s", source,
             f"{model.num_params():,}", hf.tokenizer.kind, out)
    return out


def export_hf(ckpt: Path | str, out_dir: Path | str) -> Path:
    """Write a gptscratch checkpoint as a Hugging Face GPT-2 folder.

    The folder holds config.json, model.safetensors, tokenizer.json and tokenizer_config.json;
    `AutoModelForCausalLM.from_pretrained(out_dir)` builds a GPT2LMHeadModel computing the same
    logits, and `pipeline("text-generation", model=out_dir)` runs it.

    Returns:
        The exported folder (`out_dir`).
    """
    out = Path(out_dir)
    check_new_folder(out)
    checkpoint = load_checkpoint(ckpt)
    if is_lora_checkpoint(checkpoint.meta):
        raise UserError(f"'{checkpoint.path}' holds LoRA adapters, not a whole model; fold them "
                        f"into their base first: gptscratch merge-lora --ckpt {ckpt} --out DIR, "
                        "then export DIR")
    config, tokenizer = checkpoint.model_config, checkpoint.tokenizer()
    model = checkpoint.build_model("cpu")
    tensors = state_dict_to_hf(model.state_dict(), config)
    hf_config = hf_config_from_model(config, tokenizer.eot_id, tokenizer.eot_id)
    with atomic_dir(out) as tmp:  # `out` is absent or an empty folder, checked above
        (tmp / CONFIG).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        safetensors.torch.save_file(tensors, str(tmp / SAFETENSORS), metadata={"format": "pt"})
        save_hf_tokenizer(tokenizer, tmp, config.block_size)
    log.info("exported %s to %s", checkpoint.path, out)
    return out
