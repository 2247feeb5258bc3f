"""The Python API: the typed functions behind every CLI command.

    from gptscratch import api
    data = api.prepare("shakespeare", tokenizer="char", out_dir="data/shakespeare-char")
    result = api.train(preset="shakespeare-char", data="shakespeare", out_dir="out/run")
    print(api.generate("out/run", prompt="ROMEO:", max_new_tokens=200, seed=1))
    print(api.evaluate("out/run").perplexity)

This is the top of the layer stack (beside the CLI): it composes data, model, evaluation and
training, and never prints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from gptscratch.data.prepare import PreparedData, is_prepared_dir, load_prepared, prepare
from gptscratch.data.sources import read_text_source
from gptscratch.errors import UserError
from gptscratch.evaluation.evaluate import EvalResult, evaluate_tokens
from gptscratch.model.config import ModelConfig
from gptscratch.model.generation import stream_text
from gptscratch.model.gpt import GPT
from gptscratch.model.sampling import SamplingConfig
from gptscratch.training.checkpoint import Checkpoint, load_checkpoint
from gptscratch.training.config import TrainConfig
from gptscratch.training.device import choose_device, set_cpu_float_mode
from gptscratch.training.distributed import init_distributed, main_rank_first
from gptscratch.training.loop import TrainResult
from gptscratch.training.loop import train as train_loop
from gptscratch.training.precision import choose_precision
from gptscratch.training.presets import get_preset

__all__ = ["prepare", "load_prepared", "train", "load", "generate", "stream", "evaluate"]

MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size"}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def resolve_data(
    data: str | Path, out_dir: Path, tokenizer: str | None, default_tokenizer: str,
    prepare_options: dict[str, Any],
) -> PreparedData:
    """A prepared data directory is used as it is (its tokenizer wins unless another one is
    asked for explicitly); anything else is raw text, prepared (once) into `out_dir/data`."""
    if is_prepared_dir(data):
        prepared = load_prepared(data)
        if tokenizer is not None and tokenizer != prepared.meta["tokenizer"]:
            raise UserError(f"'{data}' was prepared with the {prepared.meta['tokenizer']} "
                            f"tokenizer, not {tokenizer}; drop --tokenizer or prepare again")
        return prepared
    return prepare(str(data), tokenizer or default_tokenizer, Path(out_dir) / "data",
                   **prepare_options)


def train(
    preset: str = "shakespeare-char",
    data: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    tokenizer: str | None = None,
    resume: bool = False,
    stop_at: int | None = None,
    overrides: dict[str, Any] | None = None,
    prepare_options: dict[str, Any] | None = None,
) -> TrainResult:
    """Train (or resume) a preset, with any model or training field overridden.

    Args:
        preset: a name from `gptscratch.training.presets.PRESETS`.
        data: raw text ("shakespeare", a file, a directory or glob) or a prepared directory;
            defaults to the built-in Shakespeare, or on resume to the run's own data.
        out_dir: run directory; defaults to out/<preset>.
        tokenizer: "char", "gpt2" or "bpe:N"; defaults to the preset's.
        resume: continue the run in out_dir from its latest checkpoint. Its saved config is
            the base; only `overrides` change it (e.g. a larger max_iters).
        stop_at: stop after this step as if interrupted.
        overrides: ModelConfig / TrainConfig fields by name. Giving max_iters or epochs
            without max_time drops the preset's time budget.
        prepare_options: passed to `prepare` (val_fraction, lowercase, hf_* options).
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - MODEL_FIELDS - TRAIN_FIELDS
    if unknown:
        raise UserError(f"unknown setting(s) {sorted(unknown)}; see `gptscratch train --help`")
    spec = get_preset(preset)
    out = Path(out_dir) if out_dir is not None else Path("out") / preset
    model_fields = {**spec.model}
    train_config = spec.train
    if resume:
        # Only the saved configs are needed here; the trainer verifies the files when it loads.
        ckpt = load_checkpoint(out, prefer="latest", verify=False)
        model_fields = {k: v for k, v in ckpt.meta["model_config"].items() if k != "vocab_size"}
        train_config = TrainConfig.from_dict(ckpt.meta["train_config"])
        if data is None:
            data = ckpt.meta["data_dir"]
    model_fields.update({k: v for k, v in overrides.items() if k in MODEL_FIELDS})
    if ({"max_iters", "epochs"} & set(overrides)) and "max_time" not in overrides:
        # An explicit run length replaces the preset's wall-clock budget.
        overrides["max_time"] = None
    train_config = dataclasses.replace(
        train_config, **{k: v for k, v in overrides.items() if k in TRAIN_FIELDS})
    # Under torchrun, rank 0 prepares the data files; the other ranks then read them.
    ctx, _ = init_distributed(choose_device(train_config.device))
    with main_rank_first(ctx):
        prepared = resolve_data(data if data is not None else "shakespeare", out, tokenizer,
                                spec.tokenizer, prepare_options or {})
    model_config = ModelConfig(vocab_size=prepared.tokenizer.vocab_size, **model_fields)
    return train_loop(prepared, model_config, train_config, out, resume=resume, stop_at=stop_at,
                      extra_meta={"preset": preset})


def load(ckpt: str | Path, device: str = "auto") -> tuple[GPT, Any, Checkpoint]:
    """Load a checkpoint (a run directory resolves to its best/) for inference.

    Returns:
        (model in eval mode on the device, tokenizer, checkpoint metadata).
    """
    set_cpu_float_mode()
    checkpoint = load_checkpoint(ckpt)
    model = checkpoint.build_model(choose_device(device))
    return model, checkpoint.tokenizer(), checkpoint


def stream(
    ckpt: str | Path | tuple[GPT, Any],
    prompt: str = "\n",
    *,
    max_new_tokens: int = 500,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
    seed: int | None = None,
    device: str = "auto",
) -> Iterator[str]:
    """Yield the continuation of `prompt` piece by piece as it is generated."""
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    model, tokenizer = ckpt if isinstance(ckpt, tuple) else load(ckpt, device)[:2]
    device_of_model = next(model.parameters()).device
    generator = torch.Generator(device=device_of_model)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    return stream_text(model, tokenizer, prompt, max_new_tokens, sampling, stop=stop,
                       generator=generator)


def generate(ckpt: str | Path | tuple[GPT, Any], prompt: str = "\n", **kwargs: Any) -> str:
    """The whole continuation of `prompt` as one string (see `stream` for the options)."""
    return "".join(stream(ckpt, prompt, **kwargs))


def evaluate(
    ckpt: str | Path,
    data: str | Path | None = None,
    *,
    batch_size: int = 16,
    device: str = "auto",
    dtype: str = "float32",
) -> EvalResult:
    """Loss, perplexity and bits per byte of a checkpoint on its own val split, or on a text
    file / prepared directory given as `data`."""
    model, tokenizer, checkpoint = load(ckpt, device)
    precision = choose_precision(dtype, next(model.parameters()).device, model.config.n_embd)
    if data is None or is_prepared_dir(data):
        data_dir = data if data is not None else checkpoint.meta.get("data_dir", "")
        if not is_prepared_dir(data_dir):
            raise UserError(f"the checkpoint's data directory '{data_dir}' is gone; "
                            "pass a text file with --data")
        prepared = load_prepared(data_dir)
        if prepared.tokenizer.fingerprint() != tokenizer.fingerprint():
            raise UserError(f"'{data_dir}' was prepared with another tokenizer than the "
                            "checkpoint's; pass a raw text file with --data instead")
        tokens, num_bytes = prepared.val_tokens(), int(prepared.meta["val_bytes"])
    else:
        text, _ = read_text_source(str(data))
        tokens = tokenizer.encode_array(text)
        num_bytes = len(text.encode("utf-8"))
    if len(tokens) < 2:
        raise UserError("the evaluation text has fewer than 2 tokens; give a longer text")
    return evaluate_tokens(model, tokens, num_bytes=num_bytes, batch_size=batch_size,
                           autocast=precision.autocast)
