"""The Python API for understanding a model: pictures, a walk through the forward pass, a
memorisation check, and the HTML report that compares runs. Each picture reads its model in
full precision, computes its data with its `viz` module and returns the PNG's path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gptscratch.api.generation import ModelSource
from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.checkpoints.load import LoadedModel, load_model
from gptscratch.data.sources import read_text_source
from gptscratch.data.token_files import is_prepared_dir, load_prepared
from gptscratch.errors import UserError
from gptscratch.evaluation.explain import Stage, explain_prompt
from gptscratch.evaluation.memorisation import CopyReport, CorpusIndex
from gptscratch.model.config import SamplingConfig
from gptscratch.viz import attention as viz_attention
from gptscratch.viz import distribution as viz_distribution
from gptscratch.viz import embeddings as viz_embeddings
from gptscratch.viz import logit_lens as viz_logit_lens
from gptscratch.viz import report as viz_report


def _model_of(ckpt: ModelSource, device: str) -> LoadedModel:
    return load_model(ckpt, device, dtype="float32")  # pictures read full precision


def plot_attention(ckpt: ModelSource, prompt: str, out: str | Path = "attention.png", *,
                   layers: list[int] | None = None, device: str = "auto") -> Path:
    """Every layer's and head's attention weights for `prompt`; returns the PNG."""
    m = _model_of(ckpt, device)
    return viz_attention.plot_attention(
        viz_attention.attention_maps(m.model, m.tokenizer, prompt), out, layers)


def plot_next_token(ckpt: ModelSource, prompt: str, out: str | Path = "next-token.png", *,
                    temperature: float = 0.8, top_k: int | None = None, top_p: float = 1.0,
                    top: int = 20, device: str = "auto") -> Path:
    """The top next-token candidates and what temperature / top-k / top-p keep; the PNG."""
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    if top < 1:
        raise UserError(f"top ({top}) must be >= 1; try --top 20")
    m = _model_of(ckpt, device)
    dist = viz_distribution.next_token_distribution(m.model, m.tokenizer, prompt, sampling, top)
    return viz_distribution.plot_next_token(dist, out, prompt)


def plot_embeddings(ckpt: ModelSource, out: str | Path = "embeddings.png", *,
                    tokens: int = viz_embeddings.DEFAULT_TOKENS, device: str = "auto") -> Path:
    """Token embeddings in 2D (the `tokens` most frequent in the training data, when it is
    still there) and position-embedding similarity; returns the PNG."""
    if tokens < 1:
        raise UserError(f"tokens ({tokens}) must be >= 1; try --tokens 100")
    m = _model_of(ckpt, device)
    ids = None
    if m.checkpoint is not None:
        ids = viz_embeddings.frequent_token_ids(m.checkpoint.meta.get("data_dir", ""), tokens)
    if ids is None:
        ids = np.arange(min(tokens, m.model.config.vocab_size))
    return viz_embeddings.plot_embeddings(
        viz_embeddings.embedding_picture(m.model, m.tokenizer, ids), out)


def plot_logit_lens(ckpt: ModelSource, prompt: str, out: str | Path = "logit-lens.png", *,
                    device: str = "auto") -> Path:
    """What each layer would predict at each position of `prompt`; returns the PNG."""
    m = _model_of(ckpt, device)
    return viz_logit_lens.plot_logit_lens(viz_logit_lens.logit_lens(m.model, m.tokenizer, prompt),
                                          out)


def explain(ckpt: ModelSource, prompt: str, *, device: str = "auto") -> list[Stage]:
    """Walk `prompt` through the model: every stage's shapes and what happens there."""
    m = _model_of(ckpt, device)
    return explain_prompt(m.model, m.tokenizer, prompt)


# About 400 MB of text: the index of a larger corpus would not fit a laptop's memory.
COPY_CHECK_MAX_TOKENS = 100_000_000


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
        tokens = prepared.train_tokens()
        if len(tokens) > COPY_CHECK_MAX_TOKENS:
            raise UserError(f"the copy check indexes the whole training text in memory, and "
                            f"'{where}' holds {len(tokens):,} training ids (the limit is "
                            f"{COPY_CHECK_MAX_TOKENS:,}); check against a part of it from "
                            "Python: api.check_copy(api.corpus_index('part.txt'), text)")
        text = "".join(prepared.tokenizer.decode(np.asarray(tokens[i:i + 1_000_000]).tolist())
                       for i in range(0, len(tokens), 1_000_000))
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


def report(runs: Sequence[str | Path], out: str | Path = "report.html") -> Path:
    """One self-contained HTML file comparing runs: settings, losses, curves, samples over
    training, the copy check of each run's last sample, steps, tokens and wall time.

    Args:
        runs: run folders written by `train`, shown side by side in this order.
        out: the .html file; an existing file is replaced only if it is an earlier report.
    """
    viz_report.check_out(out)  # before the runs are read and their corpora indexed
    summaries = [viz_report.load_run(r) for r in runs]
    copies = {s.name: _last_sample_copy(s) for s in summaries}
    return viz_report.write_report(summaries, out, copies)


def _last_sample_copy(run: viz_report.RunSummary) -> CopyReport | str | None:
    """The copy check of a run's last sample against its training data; why not, if not."""
    if not run.samples:
        return None
    data = run.data_dir if is_prepared_dir(run.data_dir) else run.path / "data"
    if not is_prepared_dir(data):
        return f"the training data '{run.data_dir}' is gone"
    try:
        return check_copy(corpus_index(data), run.samples[-1][1])
    except UserError as e:  # a corpus too large to index
        return str(e)
