"""Hugging Face GPT-2 folders (local, or hub downloads): read into our terms, and written.

Our parameter names are GPT-2's, so the mapping is short: HF keeps the four projections as
`Conv1D`, (in, out), where our `nn.Linear` is (out, in), so they are transposed; and HF GPT-2
always has biases, so a `bias=False` model exports zero ones (the same function). `convert.py`
makes `import-hf` and `export-hf` of this; the loader (`load.py`) runs a folder or hub name.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from gptscratch.data.tokenizers import GPT2Tokenizer, Tokenizer, chat_template_of
from gptscratch.data.tokenizers.gpt2 import GPT2_VOCAB_SIZE
from gptscratch.data.tokenizers.hf_files import save_hf_tokenizer, tokenizer_from_hf_dir
from gptscratch.errors import UserError
from gptscratch.hub import go_offline_if_unreachable, hub_offline
from gptscratch.model.config import ModelConfig

log = logging.getLogger("gptscratch.hf")

# GPT2Config's defaults, used for keys a config.json leaves out (as transformers does).
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
    "n_inner": None, "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1,
    "attn_pdrop": 0.1, "layer_norm_epsilon": 1e-5, "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
    "add_cross_attention": False, "tie_word_embeddings": True,
}
# HF activations that are all the tanh approximation of GELU, which our `layers.gelu` computes
# (activation "gelu_tanh"); HF's "gelu" is the exact form (our activation "gelu").
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
LAYER_NORM_EPS = 1e-5  # the epsilon of our `layers.LayerNorm`
# Weights that HF keeps as Conv1D, (in, out): transposed to nn.Linear's (out, in).
_CONV1D = re.compile(r"h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight")
# Buffers (causal masks) that old PyTorch checkpoints store next to the weights.
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")


def model_config_from_hf(hf: Mapping[str, Any], where: str) -> ModelConfig:
    """Our `ModelConfig` for a parsed GPT-2 `config.json` (`where` names it in errors);
    UserError for another model, or a GPT-2 variant our model does not compute."""
    try:
        return _model_config_from_hf(hf, where)
    except (TypeError, ValueError, AttributeError) as e:  # a value of the wrong type
        raise UserError(f"{where} holds a value of the wrong type ({type(e).__name__}: "
                        f"{str(e)[:80]}); it is not a valid GPT-2 config.json") from None


def _model_config_from_hf(hf: Mapping[str, Any], where: str) -> ModelConfig:
    model_type = hf.get("model_type")
    if model_type != "gpt2":
        arch = ", ".join(hf.get("architectures") or []) or "no architectures listed"
        raise UserError(f"{where} holds a {model_type or 'unknown'} model ({arch}), not GPT-2; "
                        "gptscratch imports GPT-2 checkpoints (model_type gpt2) only")
    c = {**HF_DEFAULTS, **{k: v for k, v in hf.items() if v is not None or k == "n_inner"}}
    unsupported = [
        (c["activation_function"] in (*TANH_GELUS, "gelu"), "activation_function",
         c["activation_function"], f"gelu or one of {', '.join(TANH_GELUS)}"),
        (abs(float(c["layer_norm_epsilon"]) - LAYER_NORM_EPS) < 1e-12, "layer_norm_epsilon",
         c["layer_norm_epsilon"], "1e-05"),
        (bool(c["scale_attn_weights"]), "scale_attn_weights", c["scale_attn_weights"], "true"),
        (not c["scale_attn_by_inverse_layer_idx"], "scale_attn_by_inverse_layer_idx",
         c["scale_attn_by_inverse_layer_idx"], "false"),
        (not c["add_cross_attention"], "add_cross_attention", c["add_cross_attention"], "false"),
        (c["n_inner"] in (None, 4 * c["n_embd"]), "n_inner", c["n_inner"],
         f"null or 4 * n_embd ({4 * c['n_embd']})"),
    ]
    # reorder_and_upcast_attn is not checked: it only makes HF's eager path compute the
    # attention scores in fp32, the same function our fp32 model computes.
    for ok, name, value, rule in unsupported:
        if not ok:
            raise UserError(f"{where} has {name}={value!r}, which gptscratch's GPT does not "
                            f"compute (it needs {rule}); use a standard GPT-2 checkpoint")
    # One dropout probability for the three HF has; they are equal in every GPT-2 release.
    dropout = max(float(c[k]) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop"))
    try:
        return ModelConfig(
            vocab_size=c["vocab_size"], block_size=c["n_positions"], n_layer=c["n_layer"],
            n_head=c["n_head"], n_embd=c["n_embd"], dropout=dropout, bias=True,
            tie_embeddings=bool(c["tie_word_embeddings"]),
            activation="gelu" if c["activation_function"] == "gelu" else "gelu_tanh",
        )
    except UserError as e:
        raise UserError(f"{where} describes an invalid GPT-2: {e}") from None


def check_gpt2_expressible(config: ModelConfig) -> None:
    """Refuse (UserError) a modern-recipe option GPT-2's format cannot hold; `zero_init_proj`
    only sets the starting weights, so it exports."""
    gpt2 = {"positions": "learned", "norm": "layernorm", "qk_norm": False, "logit_softcap": 0.0}
    for name, value in gpt2.items():
        if getattr(config, name) != value:
            raise UserError(
                f"cannot export to Hugging Face GPT-2: this model has {name}="
                f"{getattr(config, name)!r}, which GPT-2's format cannot express (it needs "
                f"{name}={value!r}); use it with gptscratch itself (sample, eval, serve)")
    if config.activation not in ("gelu_tanh", "gelu"):  # HF's gelu_new and gelu
        raise UserError(
            f"cannot export to Hugging Face GPT-2: this model has activation="
            f"{config.activation!r}, which GPT-2's format cannot express (it needs gelu_tanh or "
            "gelu); use it with gptscratch itself (sample, eval, serve)")


def hf_config_from_model(config: ModelConfig, bos_token_id: int | None,
                         eos_token_id: int | None) -> dict[str, Any]:
    """The config.json that makes transformers build a GPT2LMHeadModel of this shape."""
    check_gpt2_expressible(config)
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new" if config.activation == "gelu_tanh" else "gelu",
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout, "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
        "use_cache": True, "dtype": "float32",
    }


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our GPT's state-dict shapes (lm_head.weight included) from the config: the oracle for
    loaded files."""
    C, V = config.n_embd, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.wte.weight": (V, C), "transformer.wpe.weight": (config.block_size, C),
        "transformer.ln_f.weight": (C,), "lm_head.weight": (V, C),
    }
    if config.bias:
        shapes["transformer.ln_f.bias"] = (C,)
    for i in range(config.n_layer):
        layers = {"ln_1": (C, C), "attn.c_attn": (3 * C, C), "attn.c_proj": (C, C),
                  "ln_2": (C, C), "mlp.c_fc": (4 * C, C), "mlp.c_proj": (C, 4 * C)}
        for name, (out, inp) in layers.items():
            key = f"transformer.h.{i}.{name}"
            shapes[f"{key}.weight"] = (out,) if name.startswith("ln") else (out, inp)
            if config.bias:
                shapes[f"{key}.bias"] = (out,)
    return shapes


def state_dict_from_hf(tensors: Mapping[str, torch.Tensor], config: ModelConfig,
                       where: str) -> dict[str, torch.Tensor]:
    """Our GPT's state dict (float32, `lm_head.weight` included) from HF GPT-2 tensors.

    Takes GPT2LMHeadModel names (`transformer.h.0...`) and bare GPT2Model ones (`h.0...`, as in
    OpenAI's uploads); skips old checkpoints' causal-mask buffers and, with tied embeddings, a
    stored `lm_head.weight` (as transformers does). UserError for a missing, unexpected or
    misshapen tensor.
    """
    ours: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        bare = name.removeprefix("transformer.")
        if _BUFFER.fullmatch(bare) or (name == "lm_head.weight" and config.tie_embeddings):
            continue
        if _CONV1D.fullmatch(bare):
            tensor = tensor.t()
        key = name if name == "lm_head.weight" else f"transformer.{bare}"
        ours[key] = tensor.float().contiguous()
    if config.tie_embeddings and "transformer.wte.weight" in ours:
        ours["lm_head.weight"] = ours["transformer.wte.weight"]
    check_shapes(ours, expected_shapes(config), where)
    return ours


def state_dict_to_hf(state: Mapping[str, torch.Tensor],
                     config: ModelConfig) -> dict[str, torch.Tensor]:
    """HF GPT2LMHeadModel tensors from our state dict: a model without biases gets zero ones
    (the same function); a tied head is left out (transformers re-ties it)."""
    check_gpt2_expressible(config)
    hf: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue
        bare = name.removeprefix("transformer.")
        t = tensor.detach().float()
        hf[name] = (t.t() if _CONV1D.fullmatch(bare) else t).contiguous().clone()
    if not config.bias:
        full = expected_shapes(ModelConfig(**{**config.to_dict(), "bias": True}))
        for name, shape in full.items():
            if name.endswith(".bias"):
                hf[name] = torch.zeros(shape)
    return hf


def check_shapes(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]],
                 where: str) -> None:
    """Raise a one-line UserError naming the first missing, unexpected or misshapen tensor."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {missing[:3]}"] if missing else []) + (
            [f"unexpected {unexpected[:3]}"] if unexpected else [])
        raise UserError(f"{where}: the tensors do not match config.json ({'; '.join(parts)}); "
                        "the weights and config.json must come from the same model")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise UserError(f"{where}: tensor {name} has shape {tuple(state[name].shape)} but "
                            f"config.json implies {shape}; the weights and config.json must "
                            "come from the same model")


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
    """Read a Hugging Face GPT-2 from a local folder or, online, a hub name; UserError for a
    missing, damaged or non-GPT-2 model or a hub name that cannot be fetched (offline: at once)."""
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
    """Write our weights, config and tokenizer into `folder` as a Hugging Face GPT-2."""
    tensors = state_dict_to_hf(state, config)
    template = chat_template_of(tokenizer)  # a chat model's generation ends at its turn's end
    # (where one token ends it: a `text` template's end is text, for generate's stop_strings)
    eos = tokenizer.eot_id if template is None or template.end_id is None else template.end_id
    hf_config = hf_config_from_model(config, tokenizer.eot_id, eos)
    (folder / CONFIG).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    safetensors.torch.save_file(tensors, str(folder / SAFETENSORS), metadata={"format": "pt"})
    save_hf_tokenizer(tokenizer, folder, config.block_size)
