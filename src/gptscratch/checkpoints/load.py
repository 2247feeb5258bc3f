"""The one loader: any source (a run or checkpoint folder, a LoRA run on its hash-checked base,
a Hugging Face GPT-2 folder or hub name, a loaded model) to a `LoadedModel` ready to run. Every
command and the trainer (resume, `--init-from`) load here; `build_model` makes every GPT from
weights.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from gptscratch.checkpoints.adapters import (
    add_adapters,
    check_base,
    is_lora_checkpoint,
    load_adapter_weights,
    merged_config,
)
from gptscratch.checkpoints.checkpoint import META, Checkpoint, load_checkpoint
from gptscratch.checkpoints.huggingface import CONFIG, read_hf_model
from gptscratch.data.tokenizers import Tokenizer
from gptscratch.errors import SettingError, UserError
from gptscratch.model.config import ModelConfig
from gptscratch.model.fast import use_fast_linears
from gptscratch.model.gpt import GPT
from gptscratch.model.lora import has_lora, merge_lora
from gptscratch.model.quantize import QUANTIZE, is_quantized, quantize_linears
from gptscratch.runtime.cpu import set_cpu_float_mode
from gptscratch.runtime.device import check_fits, choose_device
from gptscratch.runtime.precision import choose_precision

log = logging.getLogger("gptscratch")


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode on its device, its tokenizer, and its gptscratch checkpoint
    (metadata: step, losses, training data; None for a Hugging Face or in-memory model)."""

    model: GPT
    tokenizer: Tokenizer
    checkpoint: Checkpoint | None = None
    source: str = ""  # the source as given (a path or hub name)

    @property
    def description(self) -> str:
        """The source in words, for logs and a fine-tuned run's metadata."""
        if self.checkpoint is not None:
            return f"gptscratch checkpoint {self.checkpoint.path}"
        return self.source


ModelSource = str | Path | Checkpoint | LoadedModel


def build_model(config: ModelConfig, weights: Mapping[str, torch.Tensor]) -> GPT:
    """A GPT whose parameters are `weights`' own tensors (contiguous fp32), in eval mode.

    Built on the meta device (nothing initialised or allocated), so a 1.5B model is held once,
    not twice, while it loads. UserError if the weights' names or shapes do not match.
    """
    with torch.device("meta"):
        model = GPT(config)
    own = model.state_dict(keep_vars=True)
    tensors = {k: _own_storage(v.float()) for k, v in weights.items()}
    head, embedding = "lm_head.weight", "transformer.wte.weight"
    if config.tie_embeddings and (head in tensors) != (embedding in tensors):
        tensors.setdefault(head, tensors.get(embedding))  # type: ignore[arg-type]
        tensors.setdefault(embedding, tensors[head])  # one name for the tied matrix
    missing, unexpected = set(own) - set(tensors), set(tensors) - set(own)
    if missing or unexpected:
        raise UserError(f"the weights do not match the model (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}); use the checkpoint's own config")
    try:
        model.load_state_dict(tensors, assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise UserError(f"the weights do not match the model config ({first}); use the "
                        "checkpoint's own config") from None
    if config.tie_embeddings:  # assign gives the head a Parameter of its own: share it again
        model.lm_head.weight = model.transformer.wte.weight
    return model.eval()


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """`t`, or a copy where it is a view into a larger tensor (a cropped position table),
    which safetensors would refuse to save."""
    whole = t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    return t if whole else t.clone()


def fit_block_size(state: Mapping[str, torch.Tensor], block_size: int) -> dict[str, torch.Tensor]:
    """The weights for a context of `block_size`: the first rows of the position table (exact:
    a shorter context never uses the later rows)."""
    fitted = dict(state)
    if "transformer.wpe.weight" in state:  # rotary positions have no table to cut
        fitted["transformer.wpe.weight"] = state["transformer.wpe.weight"][:block_size]
    return fitted


def add_token_rows(state: Mapping[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """The weights for a vocabulary grown to `vocab_size` (a chat template's markers): each new
    row of the token table (and of an untied LM head) starts as the mean of the existing rows,
    so a new token begins as an average token, neither favoured nor far from the rest (the
    usual choice, e.g. Hewitt's "Initializing new word embeddings", 2021)."""
    grown = dict(state)
    for name in ("transformer.wte.weight", "lm_head.weight"):
        table = state.get(name)
        if table is None or table.shape[0] >= vocab_size:
            continue
        extra = table.float().mean(0, keepdim=True).to(table.dtype)
        grown[name] = torch.cat([table, extra.expand(vocab_size - table.shape[0], -1)])
    return grown


def with_context(config: ModelConfig, block_size: int | None) -> ModelConfig:
    """`config` reading `block_size` tokens at once (None: as trained): the KV cache's size.

    Learned positions (one `wpe` row each) can only shrink; rotary ones have no table and can
    also grow (whether the model copes with unseen distances, its text or `eval` tells).
    """
    if block_size is None or block_size == config.block_size:
        return config
    if not isinstance(block_size, int) or block_size < 1:
        raise SettingError("block_size", block_size, "must be >= 1", config.block_size)
    if block_size > config.block_size and config.positions != "rope":
        raise SettingError("block_size", block_size, f"is longer than the {config.block_size} "
                           "positions this model learned (its wpe table); only a model trained "
                           "with rotary positions can read a longer context", config.block_size,
                           " or less")
    if block_size > config.block_size:
        log.info("reading up to %d tokens at once, trained on %d (rotary positions: no table "
                 "to outgrow; distances past %d were never seen in training)", block_size,
                 config.block_size, config.block_size)
    return dataclasses.replace(config, block_size=block_size)


def load_model(source: ModelSource, device: str = "cpu", dtype: str = "float32",
               block_size: int | None = None, *, hub: bool = False,
               quantize: str = "none") -> LoadedModel:
    """A model ready to run from any source (see the module docstring).

    Args:
        source: a run or checkpoint folder, a `Checkpoint`, a Hugging Face folder (or with
            `hub`, a hub name), or a `LoadedModel` (returned as it is, or as a view reading
            `block_size` tokens: the caller's model is never changed).
        device: auto | cpu | cuda | cuda:N | mps.
        dtype: auto (bf16 where faster: CUDA, and AMX CPUs for models 512+ wide), float32,
            bfloat16 or float16.
        block_size: the context read at once (default: the trained one; `with_context`).
        quantize: none, or int8: the Linear weights stored in int8 for CPU decoding
            (`model.quantize`), the rest in float32; inference only.

    Raises:
        UserError: a missing or damaged source, a context the model cannot read, a model too
            big for memory, or a device, dtype or quantization this machine cannot run.
    """
    check_quantize(quantize, device, dtype)  # before anything loads
    if isinstance(source, LoadedModel):
        if quantize != "none" and not is_quantized(source.model):
            copied = merged_copy(source).model.to("cpu", torch.float32)  # the caller's stays
            model = quantize_linears(copied)
            source = dataclasses.replace(source, model=model)
        if block_size is None or block_size == source.model.config.block_size:
            return source
        view = copy.copy(source.model)  # shares the modules; only the context differs
        view.config = with_context(source.model.config, block_size)
        return dataclasses.replace(source, model=view)
    set_cpu_float_mode()
    checkpoint = source if isinstance(source, Checkpoint) else _our_checkpoint(source, hub)
    if checkpoint is not None:
        config, tokenizer = checkpoint.model_config, checkpoint.tokenizer()
        context = with_context(config, block_size)  # refused before the build
        check_fits(4 * config.parameter_count(), torch.device("cpu"),
                   f"the model of '{checkpoint.path}'", "use a machine with more memory")
        model = (_lora_model(checkpoint) if is_lora_checkpoint(checkpoint.meta)
                 else build_model(config, checkpoint.weights()))
    else:
        hf = read_hf_model(str(source))
        context = with_context(hf.config, block_size)
        model, tokenizer = build_model(hf.config, hf.state_dict), hf.tokenizer
    target = choose_device("cpu" if quantize != "none" else device)
    precision = choose_precision("float32" if quantize != "none" else dtype, target,
                                 context.n_embd, for_inference=True)
    model = model.to(target, precision.dtype)
    if precision.dtype == torch.bfloat16:
        use_fast_linears(model)
    model.config = context
    log.debug("running in %s (%s)", precision.name, precision.reason)
    loaded = LoadedModel(model, tokenizer, checkpoint, str(source))
    if quantize == "int8":  # adapters folded in first: the int8 weights hold base + update
        quantize_linears(merged(loaded).model)
    return loaded


def check_quantize(quantize: str, device: str, dtype: str) -> None:
    """UserError unless `quantize` can run with `device` and `dtype` (see `load_model`)."""
    if quantize not in QUANTIZE:
        raise UserError(f"unknown quantization {quantize!r}; choose " + " or ".join(QUANTIZE))
    if quantize == "none":
        return
    if device not in ("auto", "cpu"):
        raise UserError(f"--quantize {quantize} is a CPU decoding path, not for {device}; on a "
                        "GPU use --dtype bfloat16 instead, or give --device cpu")
    if dtype not in ("auto", "float32"):
        raise UserError(f"--quantize {quantize} computes in float32 around its {quantize} "
                        f"weights, not in {dtype}; leave --dtype out or give float32")


def _our_checkpoint(source: str | Path, hub: bool) -> Checkpoint | None:
    """The gptscratch checkpoint `source` names, or None for a Hugging Face model: a folder
    with a config.json, or (with `hub`) a name that is no local path."""
    path = Path(source).expanduser()
    if path.is_file() and path.name == META:
        path = path.parent
    hf_folder = path.is_dir() and (path / CONFIG).is_file() and not (path / META).is_file()
    if hf_folder or hub and not path.is_dir():
        return None
    return load_checkpoint(path)


def _lora_model(checkpoint: Checkpoint) -> GPT:
    """A LoRA run's model: its base (loaded from wherever it is, and checked by hash) with
    the run's adapters on top; on the CPU in fp32."""
    lora = checkpoint.meta["lora"]
    source = str(lora.get("base", ""))
    try:
        base = merged(load_model(source, hub=True))
    except UserError as e:
        raise UserError(f"the LoRA checkpoint '{checkpoint.path}' needs its base model "
                        f"'{source}', which cannot be loaded ({e}); put the base back there, or "
                        "merge the adapters where it exists (gptscratch merge-lora)") from None
    state = base.model.state_dict()
    check_base(state, lora, checkpoint.path)
    config = checkpoint.model_config
    # A LoRA chat fine-tune's vocabulary has the template's markers too: their rows come in
    # with the adapters.
    state = add_token_rows(fit_block_size(state, config.block_size), config.vocab_size)
    model = add_adapters(build_model(config, state), lora)
    load_adapter_weights(model, checkpoint.weights(), checkpoint.path)
    return model.eval()


def merged_copy(loaded: LoadedModel) -> LoadedModel:
    """A copy of `loaded` with any LoRA adapters folded in; `loaded` itself is left as it is."""
    return merged(dataclasses.replace(loaded, model=copy.deepcopy(loaded.model)))


def merged(loaded: LoadedModel) -> LoadedModel:
    """`loaded` with any LoRA adapters folded into its weights (in place): a plain GPT, what
    fine-tuning starts from and `merge-lora` writes."""
    if not has_lora(loaded.model):
        return loaded
    assert loaded.checkpoint is not None  # adapters come from a LoRA checkpoint
    merge_lora(loaded.model)
    loaded.model.config = merged_config(loaded.model.config, loaded.checkpoint.meta["lora"])
    return loaded
