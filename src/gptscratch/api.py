"""The Python API: the typed functions behind every CLI command.

    from gptscratch import api
    data = api.prepare("shakespeare", tokenizer="char", out_dir="data/shakespeare-char")
    result = api.train(preset="shakespeare-char", data="shakespeare", out_dir="out/run")
    print(api.generate("out/run", prompt="ROMEO:", max_new_tokens=200, seed=1))
    print(api.evaluate("out/run").perplexity)
    api.import_hf("gpt2", "models/gpt2")                       # online: OpenAI's GPT-2 124M
    api.train(init_from="models/gpt2", data="my_text.txt", out_dir="out/mine")  # fine-tune
    api.export_hf("out/mine", "hf/mine")                       # for transformers

This is the top of the layer stack (beside the CLI): it composes data, model, evaluation and
training, and never prints.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gptscratch.data.prepare import PreparedData, is_prepared_dir, load_prepared, prepare
from gptscratch.data.sources import read_text_source
from gptscratch.data.tokenizers import Tokenizer, parse_tokenizer_spec
from gptscratch.errors import UserError
from gptscratch.evaluation.evaluate import EvalResult, evaluate_tokens
from gptscratch.evaluation.explain import Stage, explain_prompt
from gptscratch.evaluation.memorisation import CopyReport, CorpusIndex
from gptscratch.inference import complete, generate, load, script_format, stream, stream_chunks
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT
from gptscratch.model.sampling import SamplingConfig
from gptscratch.training.checkpoint import load_checkpoint
from gptscratch.training.config import TrainConfig
from gptscratch.training.device import choose_device
from gptscratch.training.distributed import init_distributed, main_rank_first
from gptscratch.training.finetune import (
    finetune_model_config,
    finetune_train_config,
    fit_block_size,
    load_pretrained,
)
from gptscratch.training.hf_checkpoint import export_hf, import_hf
from gptscratch.training.loop import TrainResult
from gptscratch.training.loop import train as train_loop
from gptscratch.training.optimizer import check_freeze_layers
from gptscratch.training.precision import choose_precision
from gptscratch.training.presets import get_preset
from gptscratch.viz import attention as viz_attention
from gptscratch.viz import curves as viz_curves
from gptscratch.viz import distribution as viz_distribution
from gptscratch.viz import embeddings as viz_embeddings
from gptscratch.viz import logit_lens as viz_logit_lens

__all__ = ["prepare", "load_prepared", "train", "load", "generate", "stream", "complete",
           "stream_chunks", "script_format", "evaluate", "plot_curves", "plot_attention",
           "plot_next_token", "plot_embeddings", "plot_logit_lens", "explain", "check_copy",
           "corpus_index", "import_hf", "export_hf"]

log = logging.getLogger("gptscratch.api")

MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size"}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def resolve_data(
    data: str | Path, out_dir: Path, tokenizer: str | Tokenizer | None, default_tokenizer: str,
    prepare_options: dict[str, Any],
) -> PreparedData:
    """A prepared data directory is used as it is (its tokenizer wins unless another one is
    asked for explicitly); anything else is raw text, prepared (once) into `out_dir/data`.
    A tokenizer object (a fine-tuned model's own) must be the one the data was prepared with."""
    if is_prepared_dir(data):
        prepared = load_prepared(data)
        if tokenizer is not None and not isinstance(tokenizer, str):
            if prepared.tokenizer.fingerprint() != tokenizer.fingerprint():
                raise UserError(
                    f"'{data}' was prepared with a {prepared.tokenizer.kind} tokenizer that is "
                    f"not the {tokenizer.kind} tokenizer of the --init-from model; give the raw "
                    "text as --data instead, so it is prepared with the model's tokenizer")
        elif tokenizer is not None and tokenizer != prepared.meta["tokenizer"]:
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
    overrides = dict(overrides or {})
    unknown = set(overrides) - MODEL_FIELDS - TRAIN_FIELDS
    if unknown:
        raise UserError(f"unknown setting(s) {sorted(unknown)}; see `gptscratch train --help`")
    if init_from is not None and not resume:
        return _finetune(init_from, data, out_dir, tokenizer, stop_at, overrides,
                         prepare_options or {})
    spec = get_preset(preset)
    default_out = Path("out") / ("finetune" if init_from is not None else preset)
    out = Path(out_dir) if out_dir is not None else default_out
    model_fields = {**spec.model}
    train_config = spec.train
    extra_meta: dict[str, Any] = {"preset": preset}
    if resume:
        # Only the saved configs are needed here; the trainer verifies the files when it loads.
        ckpt = load_checkpoint(out, prefer="latest", verify=False)
        model_fields = {k: v for k, v in ckpt.meta["model_config"].items() if k != "vocab_size"}
        train_config = TrainConfig.from_dict(ckpt.meta["train_config"])
        if data is None:
            data = ckpt.meta["data_dir"]
        if "init_from" in ckpt.meta:  # a fine-tuning run keeps its provenance
            extra_meta = {"preset": None, "init_from": ckpt.meta["init_from"]}
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
                      extra_meta=extra_meta)


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
    train_config = dataclasses.replace(
        finetune_train_config(), **{k: v for k, v in overrides.items() if k in TRAIN_FIELDS})
    check_freeze_layers(train_config.freeze_layers, model_config.n_layer)  # before any work
    prepared = resolve_data(data if data is not None else "shakespeare", out,
                            pretrained.tokenizer, "", prepare_options)
    log.info("fine-tuning %s (%s tokenizer)", pretrained.source, pretrained.tokenizer.kind)
    return train_loop(prepared, model_config, train_config, out, stop_at=stop_at,
                      extra_meta={"preset": None, "init_from": str(pretrained.source)},
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
    model, tokenizer, checkpoint = load(ckpt, device, dtype="float32")
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


# --- Understanding a model: pictures, a walk through the forward pass, a memorisation check ---

ModelSource = str | Path | tuple[GPT, Any]


def _model_of(ckpt: ModelSource, device: str) -> tuple[GPT, Any]:
    # Pictures and explanations read the weights in full precision.
    return ckpt if isinstance(ckpt, tuple) else load(ckpt, device, dtype="float32")[:2]


def plot_curves(runs: Sequence[str | Path], out: str | Path = "curves.png") -> Path:
    """Loss, learning rate and tokens/s of one or more runs on one figure; returns the PNG."""
    return viz_curves.plot_curves(runs, out)


def plot_attention(ckpt: ModelSource, prompt: str, out: str | Path = "attention.png", *,
                   layers: list[int] | None = None, device: str = "auto") -> Path:
    """Every layer's and head's attention weights for `prompt`; returns the PNG."""
    model, tokenizer = _model_of(ckpt, device)
    return viz_attention.plot_attention(viz_attention.attention_maps(model, tokenizer, prompt),
                                        out, layers)


def plot_next_token(ckpt: ModelSource, prompt: str, out: str | Path = "next-token.png", *,
                    temperature: float = 0.8, top_k: int | None = None, top_p: float = 1.0,
                    top: int = 20, device: str = "auto") -> Path:
    """The top next-token candidates and what temperature / top-k / top-p keep; the PNG."""
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    if top < 1:
        raise UserError(f"top ({top}) must be >= 1; try --top 20")
    model, tokenizer = _model_of(ckpt, device)
    dist = viz_distribution.next_token_distribution(model, tokenizer, prompt, sampling, top)
    return viz_distribution.plot_next_token(dist, out, prompt)


def plot_embeddings(ckpt: ModelSource, out: str | Path = "embeddings.png", *,
                    tokens: int = viz_embeddings.DEFAULT_TOKENS, device: str = "auto") -> Path:
    """Token embeddings in 2D (the `tokens` most frequent in the training data, when it is
    still there) and position-embedding similarity; returns the PNG."""
    if tokens < 1:
        raise UserError(f"tokens ({tokens}) must be >= 1; try --tokens 100")
    model, tokenizer = _model_of(ckpt, device)
    ids = None
    if not isinstance(ckpt, tuple):
        data_dir = load_checkpoint(ckpt, verify=False).meta.get("data_dir", "")
        ids = viz_embeddings.frequent_token_ids(data_dir, tokens)
    if ids is None:
        ids = np.arange(min(tokens, model.config.vocab_size))
    return viz_embeddings.plot_embeddings(
        viz_embeddings.embedding_picture(model, tokenizer, ids), out)


def plot_logit_lens(ckpt: ModelSource, prompt: str, out: str | Path = "logit-lens.png", *,
                    device: str = "auto") -> Path:
    """What each layer would predict at each position of `prompt`; returns the PNG."""
    model, tokenizer = _model_of(ckpt, device)
    return viz_logit_lens.plot_logit_lens(viz_logit_lens.logit_lens(model, tokenizer, prompt),
                                          out)


def explain(ckpt: ModelSource, prompt: str, *, device: str = "auto") -> list[Stage]:
    """Walk `prompt` through the model: every stage's shapes and what happens there."""
    model, tokenizer = _model_of(ckpt, device)
    return explain_prompt(model, tokenizer, prompt)


def corpus_index(source: str | Path) -> CorpusIndex:
    """An index of a training corpus for `check_copy`: from a checkpoint or run directory (its
    training split), a prepared data directory (its train.bin), or a raw text source."""
    where = str(source)
    if _is_checkpoint(where):
        where = str(load_checkpoint(where, verify=False).meta.get("data_dir", ""))
        if not is_prepared_dir(where):
            raise UserError(f"the checkpoint's training data '{where}' is gone; pass the "
                            "corpus itself (a text file or prepared directory)")
    if is_prepared_dir(where):
        prepared = load_prepared(where)
        text = prepared.tokenizer.decode(np.asarray(prepared.train_tokens()).tolist())
    else:
        text, _ = read_text_source(where)
    return CorpusIndex(text)


def _is_checkpoint(path: str) -> bool:
    """A checkpoint directory, or a run directory holding best/ or latest/."""
    return any((Path(path) / sub / "checkpoint.json").is_file() for sub in ("", "best", "latest"))


def check_copy(corpus: str | Path | CorpusIndex, text: str, *, n: int = 4) -> CopyReport:
    """How much of `text` is copied from the training corpus: the longest span found
    verbatim and the fraction of its word n-grams that occur in the corpus.

    Args:
        corpus: a `CorpusIndex` (build one with `corpus_index` to check many texts), or what
            `corpus_index` accepts: a checkpoint/run directory, a prepared directory, a text.
        text: the generated text (without the prompt, to judge only what the model wrote).
        n: word n-gram length for the overlap.
    """
    index = corpus if isinstance(corpus, CorpusIndex) else corpus_index(corpus)
    return index.check(text, n=n)
