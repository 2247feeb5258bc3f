"""The Python API for data, training and evaluation: prepare, train, evaluate, import, export.

`train` composes the lower layers in one pass: the preset (or the run being resumed, or the
model being fine-tuned) gives the configs, the runtime is set up once (device, processes,
precision: refused before anything is written), the data is prepared (on rank 0 first under
torchrun), and `training.loop.train` runs.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from gptscratch.checkpoints.adapters import merge_checkpoint
from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.checkpoints.huggingface import export_hf, import_hf
from gptscratch.checkpoints.init_from import load_pretrained
from gptscratch.checkpoints.pretrained import fit_block_size
from gptscratch.data.prepare import prepare
from gptscratch.data.sources import read_text_source
from gptscratch.data.token_files import (
    PreparedData,
    check_context_fits,
    is_prepared_dir,
    load_prepared,
)
from gptscratch.data.tokenizers import Tokenizer, parse_tokenizer_spec
from gptscratch.errors import UserError
from gptscratch.evaluation.evaluate import EvalResult, evaluate_tokens
from gptscratch.generation.load import load
from gptscratch.model.config import ModelConfig
from gptscratch.runtime.cpu import set_cpu_float_mode
from gptscratch.runtime.precision import choose_precision
from gptscratch.training.config import TrainConfig
from gptscratch.training.distributed import is_main_process, main_rank_first, shutdown
from gptscratch.training.finetune import finetune_model_config, finetune_train_config, lora_plan
from gptscratch.training.loop import TrainResult
from gptscratch.training.loop import train as train_loop
from gptscratch.training.optimizer import check_freeze_layers
from gptscratch.training.presets import get_preset
from gptscratch.training.resume import resumed_provenance
from gptscratch.training.run_folder import RunFolder, check_run_folder, claim_run_folder
from gptscratch.training.setup import TrainRuntime, check_training_fits, start_runtime
from gptscratch.training.tracking import check_loggers

__all__ = ["prepare", "load_prepared", "train", "evaluate", "import_hf", "export_hf", "merge_lora",
           "MODEL_FIELDS", "TRAIN_FIELDS", "is_main_process", "shutdown"]

log = logging.getLogger("gptscratch.api")

MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size"}
TRAIN_FIELDS = set(TrainConfig.field_names())


def resolve_data(
    data: str | Path, folder: RunFolder, tokenizer: str | Tokenizer | None,
    default_tokenizer: str, prepare_options: dict[str, Any], runtime: TrainRuntime,
    context: int,
) -> PreparedData:
    """A prepared data directory is used as it is (its tokenizer wins unless another one is
    asked for explicitly); anything else is raw text, prepared (once) into the run folder's
    `data/`, which a run with checkpoints never lets other text replace. A tokenizer object
    (a fine-tuned model's own) must be the one the data was prepared with. Under torchrun rank
    0 prepares the files; the other ranks then read them."""
    with main_rank_first(runtime.ctx):
        if is_prepared_dir(data):
            prepared = load_prepared(data)
            _check_tokenizer(prepared, data, tokenizer)
            check_context_fits(int(prepared.meta["train_tokens"]),
                               int(prepared.meta["val_tokens"]), context)
        else:
            prepared = prepare(str(data), tokenizer or default_tokenizer, folder.path / "data",
                               replace=not folder.has_checkpoint, context=context,
                               **prepare_options)
        if runtime.ctx.is_main:
            claim_run_folder(folder)  # every refusal about the folder and data came first
    return prepared


def _check_tokenizer(prepared: PreparedData, data: str | Path,
                     tokenizer: str | Tokenizer | None) -> None:
    """Prepared data serves a run only with the tokenizer asked for (by name, or a fine-tuned
    model's own)."""
    if tokenizer is not None and not isinstance(tokenizer, str):
        if prepared.tokenizer.fingerprint() != tokenizer.fingerprint():
            raise UserError(
                f"'{data}' was prepared with a {prepared.tokenizer.kind} tokenizer that is "
                f"not the {tokenizer.kind} tokenizer of the --init-from model; give the raw "
                "text as --data instead, so it is prepared with the model's tokenizer")
    elif tokenizer is not None and tokenizer != prepared.meta["tokenizer"]:
        raise UserError(f"'{data}' was prepared with the {prepared.meta['tokenizer']} "
                        f"tokenizer, not {tokenizer}; drop --tokenizer or prepare again")


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
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train (or resume) a preset, with any model or training field overridden.

    Args:
        preset: a name from `gptscratch.training.presets.PRESETS`.
        data: raw text ("shakespeare", a file, a directory or glob) or a prepared directory;
            defaults to the built-in Shakespeare, or on resume to the run's own data.
        out_dir: run directory; defaults to out/<preset> (out/finetune with init_from).
        tokenizer: "char", "gpt2" or "bpe:N"; defaults to the preset's.
        resume: continue the run in out_dir from its latest checkpoint. Its saved config is
            the base; only `overrides` change it (e.g. a larger max_iters).
        stop_at: stop after this step as if interrupted.
        overrides: ModelConfig / TrainConfig fields by name. Giving max_iters or epochs
            without max_time drops the preset's time budget.
        prepare_options: passed to `prepare` (val_fraction, lowercase, hf_* options).
        init_from: fine-tune: start from these weights (a gptscratch run or checkpoint, a
            Hugging Face GPT-2 folder or hub name) instead of a random init. The model's shape
            and tokenizer come from it, the preset is not used, and the training defaults are
            `training.finetune.finetune_train_config` (learning rate 1e-4). On resume the
            run's own checkpoint wins and this is ignored.
    """
    set_cpu_float_mode()  # before any torch work, fine-tuning's source model included
    overrides = dict(overrides or {})
    unknown = set(overrides) - MODEL_FIELDS - TRAIN_FIELDS
    if unknown:
        raise UserError(f"unknown setting(s) {sorted(unknown)}; see `gptscratch train --help`")
    if init_from is not None and not resume:
        return _finetune(init_from, data, out_dir, tokenizer, stop_at, overrides,
                         prepare_options or {})
    if overrides.get("lora_rank") and not resume:
        raise UserError("--lora-rank trains adapters on a trained model; give it with "
                        "--init-from SOURCE (a gptscratch run or checkpoint, or a Hugging Face "
                        "GPT-2)")
    spec = get_preset(preset)
    out = Path(out_dir) if out_dir is not None else Path("out") / preset
    folder = check_run_folder(out, resume)  # every refusal before the first write
    model_fields = {**spec.model}
    train_config = spec.train
    extra_meta: dict[str, Any] = {"preset": preset}
    resume_tokenizer: Tokenizer | None = None
    if resume:
        # Only the saved configs are needed here; the trainer verifies the files when it loads.
        ckpt = load_checkpoint(out, prefer="latest", verify=False)
        model_fields = {k: v for k, v in ckpt.meta["model_config"].items() if k != "vocab_size"}
        train_config = TrainConfig.from_dict(ckpt.meta["train_config"])
        data = _resume_data(data, out, Path(ckpt.meta["data_dir"]))
        if tokenizer is None and not (is_prepared_dir(data) or is_prepared_dir(out / "data")):
            # Raw text prepared anew (the run's data is gone) gets the run's own tokenizer,
            # whatever this version would build from it today.
            resume_tokenizer = ckpt.tokenizer()
        extra_meta = resumed_provenance(ckpt.meta, train_config, overrides, out) or extra_meta
    model_fields.update({k: v for k, v in overrides.items() if k in MODEL_FIELDS})
    if ({"max_iters", "epochs"} & set(overrides)) and "max_time" not in overrides:
        # An explicit run length replaces the preset's wall-clock budget.
        overrides["max_time"] = None
    train_config = train_config.replace(
        **{k: v for k, v in overrides.items() if k in TRAIN_FIELDS})
    check_loggers(train_config.run.loggers)  # a missing package, before anything is written
    # The model's shape is checked now; its vocabulary comes with the data, prepared later.
    shape = ModelConfig(vocab_size=1, **model_fields)
    runtime = start_runtime(train_config.system, shape.n_embd)
    check_training_fits(shape, train_config, runtime)  # as far as it is known before the data
    prepared = resolve_data(data if data is not None else "shakespeare", folder,
                            resume_tokenizer or tokenizer, spec.tokenizer, prepare_options or {},
                            runtime, shape.block_size)
    model_config = ModelConfig(vocab_size=prepared.tokenizer.vocab_size, **model_fields)
    return train_loop(prepared, model_config, train_config, out, runtime=runtime, resume=resume,
                      stop_at=stop_at, extra_meta=extra_meta)


def merge_lora(ckpt: str | Path, out_dir: str | Path) -> Path:
    """Fold a LoRA run's adapters into its base model and write a plain checkpoint to
    `out_dir` (a new or empty folder); `export_hf` takes it. Returns `out_dir`."""
    set_cpu_float_mode()
    out = merge_checkpoint(ckpt, out_dir)
    log.info("merged the adapters of %s into %s", ckpt, out)
    return out


def _resume_data(data: str | Path | None, out: Path, recorded: Path) -> str | Path:
    """The data a resumed run continues on: its own, `recorded` (or the run folder's `data/`
    when the run folder was moved or copied with it). `data` may name it again (its prepared
    folder, or the raw text it was prepared from, checked when it is prepared again), but not
    other data, which would change the run under its checkpoints.

    Raises:
        UserError: `data` names other data than the run's own, which still exists.
    """
    if not is_prepared_dir(recorded) and is_prepared_dir(out / "data"):
        recorded = out / "data"
    if data is None or not is_prepared_dir(recorded):
        return data if data is not None else recorded
    if is_prepared_dir(data):
        same = Path(data).resolve() == recorded.resolve()
    else:  # raw text: prepared again into the run folder's data/, which must be the run's
        same = (out / "data").resolve() == recorded.resolve()
    if not same:
        raise UserError(f"this run was trained on '{recorded}', and --resume continues on it; "
                        "drop --data (to train on other text, start a new run with "
                        "--init-from on this one)")
    return data


def _finetune(
    init_from: str | Path, data: str | Path | None, out_dir: str | Path | None,
    tokenizer: str | None, stop_at: int | None, overrides: dict[str, Any],
    prepare_options: dict[str, Any],
) -> TrainResult:
    """`train(init_from=...)`: the source's model and tokenizer, the fine-tuning defaults."""
    out = Path(out_dir) if out_dir is not None else Path("out") / "finetune"
    pretrained = load_pretrained(init_from)
    if tokenizer is not None and parse_tokenizer_spec(tokenizer)[0] != pretrained.tokenizer.kind:
        raise UserError(f"--tokenizer {tokenizer} differs from the {pretrained.tokenizer.kind} "
                        "tokenizer of the --init-from model, which fine-tuning must keep; "
                        "drop --tokenizer")
    model_config = finetune_model_config(
        pretrained.config, {k: v for k, v in overrides.items() if k in MODEL_FIELDS})
    train_config = finetune_train_config().replace(
        **{k: v for k, v in overrides.items() if k in TRAIN_FIELDS})
    check_freeze_layers(train_config.finetune.freeze_layers, model_config.n_layer)
    extra_meta: dict[str, Any] = {"preset": None, "init_from": str(pretrained.source)}
    if train_config.finetune.lora_rank:
        extra_meta["lora"] = lora_plan(init_from, pretrained, model_config, train_config)
    check_loggers(train_config.run.loggers)
    folder = check_run_folder(out, resume=False)  # every refusal before the first write
    runtime = start_runtime(train_config.system, model_config.n_embd)
    check_training_fits(model_config, train_config, runtime, fine_tuning=True)
    prepared = resolve_data(data if data is not None else "shakespeare", folder,
                            pretrained.tokenizer, "", prepare_options, runtime,
                            model_config.block_size)
    log.info("fine-tuning %s (%s tokenizer)", pretrained.source, pretrained.tokenizer.kind)
    return train_loop(prepared, model_config, train_config, out, runtime=runtime,
                      stop_at=stop_at, extra_meta=extra_meta,
                      init_weights=fit_block_size(pretrained.state_dict,
                                                  model_config.block_size))


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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size ({batch_size!r}) must be a positive whole number; try "
                        "--batch-size 16")
    model, tokenizer, checkpoint = load(ckpt, device, dtype="float32")
    precision = choose_precision(dtype, next(model.parameters()).device, model.config.n_embd)
    meta = checkpoint.meta if checkpoint is not None else {}
    if data is None or is_prepared_dir(data):
        data_dir = data if data is not None else meta.get("data_dir", "")
        if not is_prepared_dir(data_dir):
            raise UserError(f"the checkpoint's data directory '{data_dir}' is gone; "
                            "pass a text file with --data")
        prepared = load_prepared(data_dir)
        if prepared.tokenizer.fingerprint() != tokenizer.fingerprint():
            raise UserError(f"'{data_dir}' was prepared with another tokenizer than the "
                            "checkpoint's; pass a raw text file with --data instead")
        tokens, num_bytes = prepared.val_tokens(), int(prepared.meta["val_bytes"])
        scored = f"the val split of {data_dir}"
    else:
        text, description = read_text_source(str(data))
        tokens = tokenizer.encode_array(text)
        num_bytes = len(text.encode("utf-8"))
        scored = description
    if len(tokens) < 2:
        raise UserError("the evaluation text has fewer than 2 tokens; give a longer text")
    result = evaluate_tokens(model, tokens, num_bytes=num_bytes, batch_size=batch_size,
                             autocast=precision.autocast)
    return dataclasses.replace(result, checkpoint=str(checkpoint.path if checkpoint else ckpt),
                               step=meta.get("step"), scored=scored)
