"""Hugging Face GPT-2 folders: reading one (or a hub download), and writing one.

`read_hf_model` reads a local Hugging Face folder (config.json with model.safetensors, sharded
safetensors, or pytorch_model.bin loaded with `torch.load(weights_only=True)`, which never runs
pickled code) or downloads a hub name such as `gpt2` when online, and maps it onto our GPT's
config and parameter names with `hf_weights.py`. `write_hf_model` writes config.json,
model.safetensors and the tokenizer files that `transformers.AutoModelForCausalLM` /
`AutoTokenizer.from_pretrained` load. `convert.py` turns these into `import-hf` and
`export-hf`; the loader (`load.py`) runs a folder or hub name directly.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from gptscratch.checkpoints.hf_weights import (
    hf_config_from_model,
    model_config_from_hf,
    state_dict_from_hf,
    state_dict_to_hf,
)
from gptscratch.data.tokenizers import GPT2Tokenizer, Tokenizer
from gptscratch.data.tokenizers.gpt2 import GPT2_VOCAB_SIZE
from gptscratch.data.tokenizers.hf_files import save_hf_tokenizer, tokenizer_from_hf_dir
from gptscratch.errors import UserError
from gptscratch.hub import go_offline_if_unreachable, hub_offline
from gptscratch.model.config import ModelConfig

log = logging.getLogger("gptscratch.hf")

CONFIG, SAFETENSORS, PT_BIN = "config.json", "model.safetensors", "pytorch_model.bin"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ["tokenizer.json", "vocab.json", "merges.txt"]
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


@dataclass(frozen=True)
class HFModel:
    """A Hugging Face GPT-2 read into our terms."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]  # our names, float32, lm_head.weight included
    tokenizer: Tokenizer


def read_hf_model(source: str) -> HFModel:
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
    return HFModel(config, state, tokenizer)


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


def write_hf_model(folder: Path, state: dict[str, torch.Tensor], config: ModelConfig,
                   tokenizer: Tokenizer) -> None:
    """Write our weights, config and tokenizer into `folder` as a Hugging Face GPT-2.

    Raises:
        UserError: the model has an option GPT-2 cannot express (`check_gpt2_expressible`).
    """
    tensors = state_dict_to_hf(state, config)
    hf_config = hf_config_from_model(config, tokenizer.eot_id, tokenizer.eot_id)
    (folder / CONFIG).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    safetensors.torch.save_file(tensors, str(folder / SAFETENSORS), metadata={"format": "pt"})
    save_hf_tokenizer(tokenizer, folder, config.block_size)
