"""Inference: load a checkpoint and generate text from it, the functions behind `sample`, `chat`
and the Python API's `generate`, `stream` and `complete`.

Everything goes through `stream_chunks`, which turns the options into one call of the model
layer: sampling (`model/streaming.py` over a `Decoder` batch) or beam search
(`model/beam_search.py`), with stop strings and script mode as stop rules.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptscratch.data.cache import atomic_file
from gptscratch.data.prepare import is_prepared_dir, load_prepared
from gptscratch.errors import UserError, require
from gptscratch.model.beam_search import BeamConfig, beam_search
from gptscratch.model.generation import generation_bytes
from gptscratch.model.gpt import GPT
from gptscratch.model.sampling import SamplingConfig
from gptscratch.model.script import (
    NextSpeakerStop,
    ScriptFormat,
    find_script_format,
    speaker_prompt,
)
from gptscratch.model.streaming import (
    Chunk,
    Completion,
    StopRule,
    StopStrings,
    apply_rules,
    encode_prompt,
    stream_batch,
)
from gptscratch.training.checkpoint import Checkpoint, load_checkpoint
from gptscratch.training.device import choose_device, set_cpu_float_mode
from gptscratch.training.precision import choose_inference_dtype

log = logging.getLogger("gptscratch")

def load(ckpt: str | Path, device: str = "auto",
         dtype: str = "auto") -> tuple[GPT, Any, Checkpoint]:
    """Load a checkpoint (a run directory resolves to its best/) for inference.

    Args:
        ckpt: a run directory or a checkpoint directory.
        device: auto | cpu | cuda | cuda:N | mps.
        dtype: the weights' dtype for inference: auto (bf16 where it is faster: CUDA, and
            CPUs with AMX for models at least 512 wide), float32, bfloat16 or float16.

    Returns:
        (model in eval mode on the device, tokenizer, checkpoint metadata).
    """
    set_cpu_float_mode()
    checkpoint = load_checkpoint(ckpt)
    target = choose_device(device)
    width = int(checkpoint.meta["model_config"]["n_embd"])
    weights_dtype, why = choose_inference_dtype(dtype, target, width)
    model = checkpoint.build_model(target).to(weights_dtype)
    log.debug("generating in %s (%s)", str(weights_dtype).removeprefix("torch."), why)
    return model, checkpoint.tokenizer(), checkpoint


def script_format(checkpoint: Checkpoint) -> ScriptFormat | None:
    """The speakers of the checkpoint's training corpus (None if it is not a script, or its
    data is gone). Found once and cached beside the prepared data as script.json."""
    data_dir = Path(checkpoint.meta.get("data_dir", ""))
    if not is_prepared_dir(data_dir):
        log.warning("the run's data (%s) is gone: speaker names cannot be checked", data_dir)
        return None
    cached = data_dir / "script.json"
    if cached.exists():
        d = json.loads(cached.read_text(encoding="utf-8"))
        return ScriptFormat(d["style"], d["speakers"]) if d else None
    prepared = load_prepared(data_dir)
    tokens = np.concatenate([prepared.train_tokens(), prepared.val_tokens()])
    found = find_script_format(prepared.tokenizer.decode(tokens.tolist()))
    with atomic_file(cached) as tmp:
        payload = {"style": found.style, "speakers": found.speakers} if found else {}
        Path(tmp).write_text(json.dumps(payload), encoding="utf-8")
    return found


def _available_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def check_batch_fits(model: GPT, batch: int, use_cache: bool = True) -> None:
    """Refuse a batch whose KV cache and logits would not fit in free memory."""
    need = generation_bytes(model, batch, use_cache)
    free = _available_memory(model.transformer.wte.weight.device)
    if free is not None and need > 0.8 * free:
        per_row = generation_bytes(model, 1, use_cache)
        raise UserError(f"{batch:,} samples need about {need / 2**30:.1f} GiB for generation but "
                        f"only {free / 2**30:.1f} GiB is free; use at most "
                        f"{max(1, int(0.8 * free // per_row)):,} (--num-samples)")


def _rules(stop: Sequence[str], until_next_speaker: bool,
           script: ScriptFormat | None) -> list[StopRule]:
    rules: list[StopRule] = [StopStrings(stop)] if stop else []
    if until_next_speaker:
        rules.append(NextSpeakerStop(script))
    return rules


def _speaker_prompts(prompts: list[str], speaker: str, script: ScriptFormat | None) -> list[str]:
    style = "line"
    if script is not None:
        name = script.resolve(speaker)
        if name is None:
            raise UserError(f"speaker {speaker!r} is not in the training corpus; its speakers "
                            f"include {script.examples()}")
        speaker, style = name, script.style
    return [speaker_prompt(p, speaker, style) for p in prompts]


def stream_chunks(
    model: GPT,
    tokenizer: Any,
    prompts: str | Sequence[str] = "\n",
    *,
    num_samples: int = 1,
    max_new_tokens: int = 500,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool = True,
    stop: Sequence[str] = (),
    speaker: str | None = None,
    until_next_speaker: bool = False,
    script: ScriptFormat | None = None,
    seed: int | None = None,
    use_cache: bool = True,
) -> Iterator[Chunk]:
    """Generate continuations of one or more prompts, yielding text chunks as they come.

    Row i * num_samples + j is sample j of prompt i. Each row ends with one chunk carrying its
    `Completion` (text, token ids, per-token log-probabilities, finish reason).

    Args:
        model, tokenizer: from `load`.
        prompts: one prompt or several (of any lengths: they share one batch).
        num_samples: samples per prompt (rows of the same batch); with beams, how many of
            the best hypotheses to return.
        max_new_tokens: the longest continuation, in tokens.
        temperature, top_k, top_p, min_p, repetition_penalty, frequency_penalty,
            presence_penalty: see `gptscratch.model.sampling.SamplingConfig`.
        beams, length_penalty, early_stopping: beam search when beams > 1 (see
            `gptscratch.model.beam_search.BeamConfig`); it ignores temperature and the filters.
        stop: strings that end a continuation (not included in it).
        speaker: script mode: the continuation is this character's next speech.
        until_next_speaker: end where another speaker's heading begins.
        script: the corpus's speakers (`script_format`), to check `speaker` and spot headings.
        seed: the same seed gives the same text.
        use_cache: the KV cache (default) or re-running the whole context every step.
    """
    # Everything is checked before the first token, so a mistake never ends a half-printed text.
    sampling = SamplingConfig(temperature, top_k, top_p, min_p, repetition_penalty,
                              frequency_penalty, presence_penalty)
    beam = BeamConfig(beams, length_penalty, early_stopping)
    require(num_samples >= 1, f"num_samples ({num_samples}) must be >= 1")
    require(max_new_tokens >= 0, f"max_new_tokens ({max_new_tokens}) must be >= 0")
    rules = _rules(stop, until_next_speaker, script)
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    require(len(texts) > 0 and all(p != "" for p in texts),
            "a prompt is empty; give --prompt TEXT or pipe text on stdin")
    if speaker is not None:
        texts = _speaker_prompts(texts, speaker, script)
    for text in texts:
        encode_prompt(tokenizer, text)  # a prompt the tokenizer cannot encode fails now
    if beam.num_beams > 1:
        require(num_samples <= beam.num_beams, f"num_samples ({num_samples}) must be <= beams "
                f"({beam.num_beams}): beam search returns at most that many hypotheses")
        check_batch_fits(model, beam.num_beams, use_cache)
        return _beam_chunks(model, tokenizer, texts, num_samples, max_new_tokens, beam, rules,
                            sampling, use_cache)
    check_batch_fits(model, len(texts) * num_samples, use_cache)
    rows = [t for t in texts for _ in range(num_samples)]
    generator = torch.Generator(device=model.transformer.wte.weight.device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    return stream_batch(model, tokenizer, rows, max_new_tokens, sampling, rules=rules,
                        generator=generator, use_cache=use_cache)


def _beam_chunks(model: GPT, tokenizer: Any, texts: list[str], num_samples: int,
                 max_new_tokens: int, beam: BeamConfig, rules: list[StopRule],
                 sampling: SamplingConfig, use_cache: bool) -> Iterator[Chunk]:
    for i, text in enumerate(texts):
        best = _beam_completions(model, tokenizer, text, max_new_tokens, beam, rules, sampling,
                                 use_cache)
        for j, c in enumerate(best[:num_samples]):
            yield Chunk(i * num_samples + j, c.text, c)


def _beam_completions(model: GPT, tokenizer: Any, prompt: str, max_new_tokens: int,
                      beam: BeamConfig, rules: list[StopRule], sampling: SamplingConfig,
                      use_cache: bool) -> list[Completion]:
    def ended(ids: list[int]) -> bool:
        return apply_rules(tokenizer.decode(ids), rules)[0] is not None

    hypotheses = beam_search(model, encode_prompt(tokenizer, prompt), max_new_tokens, beam,
                             is_finished=ended if rules else None, sampling=sampling,
                             use_cache=use_cache)
    out = []
    for h in hypotheses:
        text = tokenizer.decode(h.ids)
        cut = apply_rules(text, rules)[0] if rules else None
        out.append(Completion(prompt, text if cut is None else text[:cut], h.ids, [],
                              "stop" if h.finished else "length", h.score))
    return out




def _resolve(ckpt: str | Path | tuple[GPT, Any], device: str, dtype: str,
             options: dict[str, Any]) -> tuple[GPT, Any]:
    """A checkpoint path or an already loaded (model, tokenizer) pair; for script mode, the
    checkpoint's corpus supplies the speakers unless `script` was given."""
    if isinstance(ckpt, tuple):
        return ckpt[0], ckpt[1]
    model, tokenizer, checkpoint = load(ckpt, device, dtype)
    wants_script = options.get("speaker") is not None or options.get("until_next_speaker")
    if wants_script and options.get("script") is None:
        options["script"] = script_format(checkpoint)
    return model, tokenizer


def stream(ckpt: str | Path | tuple[GPT, Any], prompt: str = "\n", *, device: str = "auto",
           dtype: str = "auto", **options: Any) -> Iterator[str]:
    """Yield the continuation of one prompt piece by piece as it is generated.

    Args:
        ckpt: a run or checkpoint directory, or a (model, tokenizer) pair from `load`.
        prompt: the text to continue.
        device, dtype: where and in which dtype to run a checkpoint loaded here.
        **options: any option of `stream_chunks` (max_new_tokens, temperature, top_k, top_p,
            min_p, the penalties, stop, speaker, until_next_speaker, seed, use_cache, beams...).
    """
    require(options.get("num_samples", 1) == 1,
            "stream yields one continuation; use complete() or stream_chunks() for several")
    model, tokenizer = _resolve(ckpt, device, dtype, options)
    chunks = stream_chunks(model, tokenizer, prompt, **options)
    return (c.text for c in chunks if c.text)


def generate(ckpt: str | Path | tuple[GPT, Any], prompt: str = "\n", **options: Any) -> str:
    """The whole continuation of `prompt` as one string (options as for `stream`)."""
    return "".join(stream(ckpt, prompt, **options))


def complete(ckpt: str | Path | tuple[GPT, Any], prompts: str | Sequence[str] = "\n", *,
             device: str = "auto", dtype: str = "auto", **options: Any) -> list[Completion]:
    """Generate for one or more prompts in one batch and return every `Completion` (text,
    token ids, per-token log-probabilities, finish reason; the score with beams), row i *
    num_samples + j being sample j of prompt i. Options as for `stream_chunks`."""
    model, tokenizer = _resolve(ckpt, device, dtype, options)
    done: dict[int, Completion] = {}
    for chunk in stream_chunks(model, tokenizer, prompts, **options):
        if chunk.completion is not None:
            done[chunk.row] = chunk.completion
    return [done[i] for i in sorted(done)]
