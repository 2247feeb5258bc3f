"""How a training run starts: `train` resolves the settings (a preset, the run resumed, or the
model fine-tuned: its defaults, rules and LoRA plan are at the end), makes every refusal it can
before anything is written, prepares the data and hands over to `loop.run`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptscratch.checkpoints.adapters import base_source, lora_meta, state_hash
from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.checkpoints.load import (
    LoadedModel,
    add_token_rows,
    fit_block_size,
    load_model,
    merged,
)
from gptscratch.data.conversations import is_conversation_file
from gptscratch.data.prepare import prepare
from gptscratch.data.prepare_chat import BUILTIN_QUESTIONS, chat_prepare_options, prepare_chat
from gptscratch.data.token_files import (
    PreparedData,
    check_context_fits,
    is_prepared_dir,
    load_prepared,
)
from gptscratch.data.tokenizers import (
    Tokenizer,
    chat_template_of,
    parse_tokenizer_spec,
    with_chat_template,
)
from gptscratch.data.tokenizers.chat_template import MARKERS
from gptscratch.data.tokenizers.gpt2 import GPT2_VOCAB_SIZE
from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig, parse_targets
from gptscratch.model.gpt import GPT
from gptscratch.model.lora import check_rank
from gptscratch.runtime.cpu import set_cpu_float_mode
from gptscratch.runtime.precision import choose_precision
from gptscratch.training.config import TrainConfig
from gptscratch.training.distributed import gather_to_main, main_rank_first
from gptscratch.training.loop import TrainResult, run
from gptscratch.training.optimizer import check_freeze_layers
from gptscratch.training.presets import get_preset
from gptscratch.training.resume import resumed_provenance
from gptscratch.training.run_folder import RunFolder, check_run_folder, claim_run_folder
from gptscratch.training.setup import TrainRuntime, check_training_fits, start_runtime
from gptscratch.training.sizing import SHAPE_FIELDS, Choice, shape_of, size_model
from gptscratch.training.tracking import check_loggers

log = logging.getLogger("gptscratch.train")

MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size"}
TRAIN_FIELDS = set(TrainConfig.field_names())
# A char vocabulary is known only once the text is read; the memory check before it assumes
# this many characters (the built-in corpus has 80).
CHAR_VOCAB_GUESS = 256


@dataclass(frozen=True)
class Plan:
    """A run's settings, resolved before anything is written."""

    model_fields: dict[str, Any]  # ModelConfig fields but vocab_size, which the data gives
    config: TrainConfig
    folder: RunFolder
    data: str | Path  # raw text to prepare, or a prepared folder
    tokenizer: str | Tokenizer  # what raw text is prepared with
    explicit_tokenizer: bool  # asked for by name or by the model: prepared data must match
    extra_meta: dict[str, Any]  # provenance kept in every checkpoint
    vocab_size: int  # known, or the best guess before the data is prepared
    source: LoadedModel | None = None  # the model a fine-tuning run starts from

    @property
    def fine_tuning(self) -> bool:
        return self.source is not None or "lora" in self.extra_meta

    @property
    def sft(self) -> bool:
        """Whether the run trains on conversations (chat fine-tuning)."""
        return bool(self.extra_meta.get("sft"))


def train(preset: str = "shakespeare-char", data: str | Path | None = None,
          out_dir: str | Path | None = None, *, tokenizer: str | None = None, resume: bool = False,
          stop_at: int | None = None, overrides: dict[str, Any] | None = None,
          prepare_options: dict[str, Any] | None = None,
          init_from: str | Path | None = None, sft: bool = False) -> TrainResult:
    """Train (or resume) a preset, with any model or training field overridden.

    Args:
        preset: a name from `presets.PRESETS`.
        data: raw text ("shakespeare", a file, a directory or glob) or a prepared directory;
            defaults to the built-in Shakespeare, or on resume to the run's own data.
        out_dir: run directory; defaults to out/<preset> (out/finetune with init_from).
        tokenizer: "char", "gpt2" or "bpe:N"; defaults to the preset's.
        resume: continue the run in out_dir from its saved config, changed only by `overrides`.
        stop_at: stop after this step as if interrupted.
        overrides: ModelConfig / TrainConfig fields by name. Giving max_iters or epochs
            without max_time drops the preset's time budget.
        prepare_options: passed to `prepare` (val_fraction, lowercase, hf_* options).
        init_from: fine-tune from these weights (a gptscratch run or checkpoint, a Hugging
            Face GPT-2 folder or hub name), which fix the shape and tokenizer; the defaults
            are `finetune_train_config`'s (`sft_train_config`'s with `sft`), not a preset's.
            Ignored on resume.
        sft: chat fine-tuning: `data` holds conversations (`prepare_chat`; default the built-in
            Shakespeare questions), the tokenizer gains the chat template (`chat_template`: its
            markers as new ids, or as text), and the loss is taken on the answers
            (`train_on`). A resumed run keeps its own, as does a model fine-tuned with one.
    """
    set_cpu_float_mode()  # before any torch work, fine-tuning's source model included
    overrides = dict(overrides or {})
    unknown = set(overrides) - MODEL_FIELDS - TRAIN_FIELDS
    if unknown:
        raise UserError(f"unknown setting(s) {sorted(unknown)}; see `gptscratch train --help`")
    if init_from is not None and not resume:
        plan = _finetune_plan(init_from, data, out_dir, tokenizer, overrides, sft)
    else:
        plan = _preset_plan(preset, data, out_dir, tokenizer, resume, overrides, sft)
    check_loggers(plan.config.run.loggers)  # a missing package, before anything is written
    shape = ModelConfig(vocab_size=plan.vocab_size, **plan.model_fields)
    runtime = start_runtime(plan.config.system, shape.n_embd)
    if plan.config.run.size == "auto" and not resume:
        plan, runtime = _sized(plan, runtime)
        shape = ModelConfig(vocab_size=plan.vocab_size, **plan.model_fields)
    plan = dataclasses.replace(plan, config=check_training_fits(shape, plan.config, runtime,
                                                                fine_tuning=plan.fine_tuning))
    prepared = _prepared_data(plan, runtime, shape.block_size, prepare_options or {})
    model_config = dataclasses.replace(shape, vocab_size=prepared.tokenizer.vocab_size)
    init = None
    if plan.source is not None:
        log.info("fine-tuning %s (%s tokenizer)", plan.source.description,
                 plan.source.tokenizer.kind)
        init = add_token_rows(fit_block_size(plan.source.model.state_dict(),
                                             model_config.block_size), model_config.vocab_size)
        if model_config.vocab_size > plan.source.model.config.vocab_size:
            log.info("the chat template's %d markers join the vocabulary (%s); their "
                     "embeddings start as the mean of the others'", len(MARKERS),
                     " ".join(MARKERS))
    return run(prepared, model_config, plan.config, plan.folder.path, runtime, resume=resume,
               stop_at=stop_at, extra_meta=plan.extra_meta, init_weights=init)


def _preset_plan(preset: str, data: str | Path | None, out_dir: str | Path | None,
                 tokenizer: str | None, resume: bool, overrides: dict[str, Any],
                 sft: bool = False) -> Plan:
    """A run from a preset, or the run in `out_dir` resumed (its saved configs are the base)."""
    if overrides.get("lora_rank") and not resume:
        raise UserError("--lora-rank trains adapters on a trained model; give it with "
                        "--init-from SOURCE (a gptscratch run or checkpoint, or a Hugging Face "
                        "GPT-2)")
    spec = get_preset(preset)
    out = Path(out_dir) if out_dir is not None else Path("out") / preset
    folder = check_run_folder(out, resume)  # every refusal before the first write
    model_fields, config = {**spec.model}, spec.train
    extra_meta: dict[str, Any] = {"preset": preset, **({"sft": True} if sft else {})}
    chosen: str | Tokenizer = tokenizer or spec.tokenizer
    vocab = None
    if resume:
        # Only the saved configs are needed here; the loop verifies the files when it loads.
        ckpt = load_checkpoint(out, prefer="latest", verify=False)
        model_fields = {k: v for k, v in ckpt.meta["model_config"].items() if k != "vocab_size"}
        vocab = int(ckpt.meta["model_config"]["vocab_size"])
        config = TrainConfig.from_dict(ckpt.meta["train_config"])
        data = _resume_data(data, out, Path(ckpt.meta["data_dir"]))
        if tokenizer is None and not (is_prepared_dir(data) or is_prepared_dir(out / "data")):
            # Raw text prepared anew (the run's data is gone) gets the run's own tokenizer,
            # whatever this version would build from it today.
            chosen = ckpt.tokenizer()
        extra_meta = resumed_provenance(ckpt.meta, config, overrides, out) or extra_meta
        extra_meta = {k: v for k, v in extra_meta.items() if k != "sft"}
        if ckpt.meta.get("sft"):
            extra_meta["sft"] = True
    model_fields.update({k: v for k, v in overrides.items() if k in MODEL_FIELDS})
    if ({"max_iters", "epochs"} & set(overrides)) and "max_time" not in overrides:
        overrides = {**overrides, "max_time": None}  # a run length replaces the time budget
    config = config.replace(**{k: v for k, v in overrides.items() if k in TRAIN_FIELDS})
    if not resume:
        config = _check_size(config, overrides)
    data = data if data is not None else BUILTIN_QUESTIONS if sft else "shakespeare"
    markers = sft and config.finetune.chat_template == "tokens"
    guess = _vocab_guess(data, chosen) + (len(MARKERS) if markers else 0)
    return Plan(model_fields, config, folder, data, chosen,
                tokenizer is not None or not isinstance(chosen, str), extra_meta,
                vocab or guess)


def _check_size(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A preset's `--size auto` gives way to a shape or a run length given instead; asked for
    by name beside them, it is refused."""
    if config.run.size != "auto":
        return config
    given = [f"--{name.replace('_', '-')}" for name in SHAPE_FIELDS if name in overrides]
    asked = overrides.get("size") == "auto"
    if given:
        if asked:
            raise UserError(f"--size auto chooses the model's shape; drop {' '.join(given)} "
                            "(or --size auto)")
        log.debug("the shape given (%s) replaces the preset's --size auto", " ".join(given))
        return config.replace(size="fixed")
    if not config.run.max_time:
        if asked:
            raise UserError("--size auto sizes the model to a time budget; give --max-time "
                            "SECONDS, or drop --size auto and give the shape")
        log.debug("no time budget (a run length was given): the preset's own shape, not "
                  "--size auto")
        return config.replace(size="fixed")
    return config


def _sized(plan: Plan, runtime: TrainRuntime) -> tuple[Plan, TrainRuntime]:
    """The plan with the shape `--size auto` chooses (rank 0 times the shapes, every rank
    takes its choice), and the runtime's precision for that width."""
    mine = (size_model(plan.model_fields, plan.config, plan.vocab_size, runtime.device,
                       runtime.ctx.world_size) if runtime.ctx.is_main else None)
    choice: Choice = gather_to_main(mine, runtime.ctx)[0]
    fields = {**plan.model_fields, **shape_of(choice.depth)}
    precision = choose_precision(plan.config.system.dtype, runtime.device, fields["n_embd"])
    plan = dataclasses.replace(plan, model_fields=fields,
                               extra_meta={**plan.extra_meta, "sizing": choice.to_meta()})
    return plan, dataclasses.replace(runtime, precision=precision)


def _finetune_plan(init_from: str | Path, data: str | Path | None, out_dir: str | Path | None,
                   tokenizer: str | None, overrides: dict[str, Any], sft: bool = False) -> Plan:
    """A run starting from a trained model: its shape and tokenizer, fine-tuning's defaults
    (chat fine-tuning's, with `sft`: the tokenizer gains the chat markers)."""
    out = Path(out_dir) if out_dir is not None else Path("out") / "finetune"
    folder = check_run_folder(out, resume=False)  # every refusal before the first write
    source = merged(load_model(init_from, hub=True))  # a LoRA run: adapters folded in
    if tokenizer is not None and parse_tokenizer_spec(tokenizer)[0] != source.tokenizer.kind:
        raise UserError(f"--tokenizer {tokenizer} differs from the {source.tokenizer.kind} "
                        "tokenizer of the --init-from model, which fine-tuning must keep; "
                        "drop --tokenizer")
    model_config = finetune_model_config(
        source.model.config, {k: v for k, v in overrides.items() if k in MODEL_FIELDS})
    tok = source.tokenizer
    if sft:  # the style asked for, else the one the model was fine-tuned with, else tokens
        had = chat_template_of(tok)
        style = overrides.get("chat_template") or (had.style if had else "tokens")
        tok = with_chat_template(tok, style)  # the other style than the model's: refused
        overrides = {**overrides, "chat_template": style}
    model_config = dataclasses.replace(model_config, vocab_size=tok.vocab_size)
    lora = bool(overrides.get("lora_rank"))
    defaults = (sft_train_config(source.model.num_params(), lora) if sft
                else finetune_train_config())
    if "max_iters" in overrides and "epochs" not in overrides:
        overrides = {**overrides, "epochs": None}  # a step count replaces SFT's epochs
    config = defaults.replace(**{k: v for k, v in overrides.items() if k in TRAIN_FIELDS})
    if config.run.size == "auto":
        raise UserError("--size auto sizes a new model; a model fine-tuned with --init-from "
                        "keeps its shape: drop --size auto")
    new_rows = source.tokenizer.vocab_size if tok.vocab_size > source.tokenizer.vocab_size \
        else None
    if new_rows is not None and config.finetune.lora_rank and config.optim.weight_decay:
        raise UserError("--lora-rank with --sft trains the chat markers' new embedding rows "
                        "beside the adapters, which weight decay would let the frozen rows "
                        "drift with; drop --weight-decay")
    check_freeze_layers(config.finetune.freeze_layers, model_config.n_layer)
    extra_meta: dict[str, Any] = {"preset": None, "init_from": source.description,
                                  **({"sft": True} if sft else {})}
    if config.finetune.lora_rank:
        extra_meta["lora"] = lora_plan(init_from, state_hash(source.model.state_dict()),
                                       model_config, config, new_rows)
    fields = {k: v for k, v in model_config.to_dict().items() if k != "vocab_size"}
    default_data = BUILTIN_QUESTIONS if sft else "shakespeare"
    return Plan(fields, config, folder, data if data is not None else default_data,
                tok, True, extra_meta, model_config.vocab_size, source)


def _vocab_guess(data: str | Path, tokenizer: str | Tokenizer) -> int:
    """The vocabulary the data will have, before it is prepared (for the memory check)."""
    if not isinstance(tokenizer, str):
        return tokenizer.vocab_size
    if is_prepared_dir(data):
        return int(load_prepared(data).tokenizer.vocab_size)
    kind, size = parse_tokenizer_spec(tokenizer)
    return size or (GPT2_VOCAB_SIZE if kind == "gpt2" else CHAR_VOCAB_GUESS)


def _prepared_data(plan: Plan, runtime: TrainRuntime, context: int,
                   options: dict[str, Any]) -> PreparedData:
    """A prepared data directory as it is (checked against the tokenizer asked for), or raw
    text prepared once into the run folder's `data/` (by rank 0 under torchrun)."""
    with main_rank_first(runtime.ctx):
        if is_prepared_dir(plan.data):
            prepared = load_prepared(plan.data)
            _check_content(prepared, plan)
            if plan.explicit_tokenizer:
                _check_tokenizer(prepared, plan.data, plan.tokenizer)
            if not prepared.is_chat:
                check_context_fits(int(prepared.meta["train_tokens"]),
                                   int(prepared.meta["val_tokens"]), context)
        elif plan.sft:
            prepared = prepare_chat(str(plan.data), plan.tokenizer, plan.folder.path / "data",
                                    replace=not plan.folder.has_checkpoint,
                                    chat_template=plan.config.finetune.chat_template,
                                    **chat_prepare_options(options))
        else:
            if str(plan.data).endswith((".json", ".jsonl")) and \
                    is_conversation_file(Path(plan.data)):
                raise UserError(f"'{plan.data}' holds conversations; to teach a model to "
                                "answer, add --sft (with --init-from a trained model)")
            text_options = {k: v for k, v in options.items() if k != "skip_bad_rows"}
            prepared = prepare(str(plan.data), plan.tokenizer, plan.folder.path / "data",
                               replace=not plan.folder.has_checkpoint, context=context,
                               **text_options)
        if runtime.ctx.is_main:
            claim_run_folder(plan.folder)  # every refusal about the folder and data came first
    return prepared


def _check_content(prepared: PreparedData, plan: Plan) -> None:
    """Conversation data trains only with --sft, and --sft only on conversations laid out with
    the run's chat template."""
    if plan.sft and not prepared.is_chat:
        raise UserError(f"'{plan.data}' holds prepared text, not conversations; --sft needs "
                        "conversation files (or shakespeare-questions), or drop --sft")
    if prepared.is_chat and not plan.sft:
        raise UserError(f"'{plan.data}' holds prepared conversations; add --sft to fine-tune "
                        "on them")
    template, style = chat_template_of(prepared.tokenizer), plan.config.finetune.chat_template
    if plan.sft and template is not None and template.style != style:
        raise UserError(f"'{plan.data}' was prepared with the {template.style} chat template, "
                        f"not {style}; give --chat-template {template.style}, or the "
                        "conversation files instead")


def _check_tokenizer(prepared: PreparedData, data: str | Path, tokenizer: str | Tokenizer) -> None:
    """Prepared data serves a run only with the tokenizer asked for (by name, or a fine-tuned
    model's own)."""
    if not isinstance(tokenizer, str):
        if prepared.tokenizer.fingerprint() != tokenizer.fingerprint():
            raise UserError(
                f"'{data}' was prepared with a {prepared.tokenizer.kind} tokenizer that is "
                f"not the {tokenizer.kind} tokenizer of the --init-from model; give the raw "
                "text as --data instead, so it is prepared with the model's tokenizer")
    elif tokenizer != prepared.meta["tokenizer"]:
        raise UserError(f"'{data}' was prepared with the {prepared.meta['tokenizer']} "
                        f"tokenizer, not {tokenizer}; drop --tokenizer or prepare again")


def _resume_data(data: str | Path | None, out: Path, recorded: Path) -> str | Path:
    """The data a resumed run continues on: its own, `recorded` (or the run folder's `data/`,
    if the folder moved with it), which `data` may name again (prepared or raw) but not change.

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


# Fields a fine-tuning run may change without touching the weights' shapes.
FREE_FIELDS = ("dropout", "attention")


def finetune_train_config() -> TrainConfig:
    """The defaults of a fine-tuning run (every field can still be overridden): learning rate
    1e-4 decaying to 1e-5, 6-30x below the from-scratch presets' (6e-4 to 3e-3), as large steps
    would wash out what the model knows (GPT-2 is commonly fine-tuned at 3e-5 to 5e-5: nanoGPT,
    transformers' Trainer); no weight decay, which would pull the pretrained weights to zero."""
    return TrainConfig().replace(
        batch_size=8, max_iters=500, learning_rate=1e-4, min_lr=1e-5, warmup_iters=20,
        weight_decay=0.0, eval_interval=100, eval_iters=20)


def sft_train_config(n_params: int, lora: bool = False) -> TrainConfig:
    """The defaults of chat fine-tuning (every field can still be overridden), by the size of
    the base: no weight decay, a short warm-up, a learning rate that falls with size, and for a
    small model more passes at a higher rate. Below 20M parameters (the built-in char models):
    3e-3 (in trials on the built-in questions, not stored, 1e-3 taught the answers' form but
    not to read the passage, and 6e-3 learned less than 3e-3), for 2 epochs, or 10 below 1M
    parameters: the main job's model sized to 270 s on a 2-core CPU (2 layers x 128, 0.4M)
    scored 0.07 after 2 epochs, 0.26 after 6 and 0.33 after 10 in those trials, while the 2.4M
    3 x 256 model scored 0.39 after 2 (benchmarks/sft.py measures the default). Below 200M
    (GPT-2 124M): 1e-4 for 3 epochs (LLMs-from-scratch fine-tunes it at 5e-5); above, 5e-5
    for 2 (nanochat's SFT runs 1). LoRA's adapters start at zero and take 3x the rate (LoRA
    papers use 3-10x full fine-tuning's)."""
    lr, epochs = (3e-3, 10.0) if n_params < 1e6 else (3e-3, 2.0) if n_params < 20e6 \
        else (1e-4, 3.0) if n_params < 200e6 else (5e-5, 2.0)
    lr *= 3 if lora else 1
    return TrainConfig().replace(
        batch_size=16, max_iters=1, epochs=epochs, max_time=None, learning_rate=lr,
        min_lr=lr / 10, warmup_iters=20, weight_decay=0.0, eval_interval=0, eval_iters=10)


def finetune_model_config(base: ModelConfig, overrides: Mapping[str, Any]) -> ModelConfig:
    """The source's model config with `overrides`: FREE_FIELDS, or a shorter block_size (the
    position table is cropped: `checkpoints.load.fit_block_size`).

    Raises:
        UserError: an override would change a weight's shape (or a longer context is asked).
    """
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if name == "block_size":
            if not isinstance(value, int) or not 1 <= value <= base.block_size:
                raise UserError(f"{flag} ({value}) must be between 1 and the source model's "
                                f"context of {base.block_size} tokens; try {flag} "
                                f"{min(base.block_size, 256)}")
        elif name not in FREE_FIELDS and value != getattr(base, name):
            raise UserError(f"{flag} ({value}) cannot change a model loaded with --init-from "
                            f"(its {name} is {getattr(base, name)}); drop {flag}")
    return dataclasses.replace(base, **overrides)


def lora_plan(init_from: str | Path, base_sha256: str, model_config: ModelConfig,
              train_config: TrainConfig, new_rows_from: int | None = None) -> dict[str, Any]:
    """The `lora` entry of a LoRA run's checkpoints (`base_sha256`: the base weights' hash),
    with every refusal its settings can cause made now, before anything is written."""
    ft = train_config.finetune
    if train_config.system.fsdp:
        raise UserError("--lora-rank trains with one copy of the model per process (DDP); "
                        "drop --fsdp (the adapters are small enough not to need sharding)")
    if ft.freeze_layers or ft.freeze_embeddings:
        raise UserError("--lora-rank already freezes every weight of the model; drop "
                        "--freeze-layers / --freeze-embeddings")
    with torch.device("meta"):
        check_rank(GPT(model_config), ft.lora_rank, parse_targets(ft.lora_targets))
    log.info("LoRA: rank %d adapters on %s (alpha %g)", ft.lora_rank, ft.lora_targets,
             ft.lora_alpha)
    return lora_meta(ft.lora_rank, ft.lora_alpha, ft.lora_dropout, ft.lora_targets,
                     base_source(init_from), base_sha256, new_rows_from)
