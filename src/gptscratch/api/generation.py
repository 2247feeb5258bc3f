"""The Python API for generation: load a model, then stream or complete text.

`stream_chunks` (text chunks per sample, as they come) and `complete` (finished completions)
do the work; `stream` and `generate` are their one-prompt shorthands. Each takes a directory or
a loaded model, and a `GenerationConfig` and / or its fields as keywords, checked before loading.

    model = api.load("out/run")
    for chunk in api.stream_chunks(model, ["ROMEO:", "JULIET:"], num_samples=2, seed=0):
        print(chunk.row, chunk.text)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gptscratch.checkpoints.load import LoadedModel, load_model
from gptscratch.errors import require
from gptscratch.generation import stream as text_stream
from gptscratch.generation.chat import ChatSession, check_scene
from gptscratch.generation.config import GenerationConfig
from gptscratch.generation.stream import Completion, Generation

# What the functions below take as `model`: a run or checkpoint directory (or a Hugging Face
# GPT-2 folder), loaded here, or a model `load` returned.
ModelSource = str | Path | LoadedModel


def stream_chunks(model: ModelSource, prompts: str | Sequence[str] = "\n",
                  config: GenerationConfig | None = None, *, device: str = "auto",
                  dtype: str = "auto", quantize: str = "none", **options: Any) -> Generation:
    """Continue one or more prompts in one batch, yielding `Chunk`s of text as they come.

    Args:
        model: a run or checkpoint directory, or a model from `load`.
        prompts: one prompt or several (of any lengths).
        config: the generation settings (default: `GenerationConfig()`).
        device, dtype, quantize: where and in which dtype to run a checkpoint loaded here, and
            whether to store its Linear weights in int8 (`load`).
        **options: `GenerationConfig` fields that replace the config's: max_new_tokens,
            temperature, top_k, top_p, min_p, the penalties, beams, num_samples, seed, stop,
            speaker, until_next_speaker, use_cache...

    Returns:
        The chunks (row i * num_samples + j is sample j of prompt i; each row's last chunk
        carries its `Completion`), with `.prompts`, the texts the model continues.
    """
    config = GenerationConfig.build(config, **options)  # checked before the (slow) load
    return text_stream.stream_chunks(load_model(model, device, dtype, quantize=quantize),
                                     prompts, config)


def complete(model: ModelSource, prompts: str | Sequence[str] = "\n",
             config: GenerationConfig | None = None, *, device: str = "auto",
             dtype: str = "auto", quantize: str = "none",
             prompt_ids: Sequence[Sequence[int]] | None = None,
             **options: Any) -> list[Completion]:
    """Generate for one or more prompts in one batch and return every `Completion` (text,
    token ids, per-token log-probabilities, finish reason; the score with beams), row i *
    num_samples + j being sample j of prompt i. Arguments as for `stream_chunks`;
    `prompt_ids`, each prompt's ids where its text cannot say them (a chat template's
    markers: `ChatTemplate.prompt_ids`)."""
    config = GenerationConfig.build(config, **options)
    return text_stream.complete(load_model(model, device, dtype, quantize=quantize), prompts,
                                config, prompt_ids=prompt_ids)


def stream(model: ModelSource, prompt: str = "\n", config: GenerationConfig | None = None, *,
           device: str = "auto", dtype: str = "auto", quantize: str = "none",
           **options: Any) -> Iterator[str]:
    """Yield the continuation of one prompt piece by piece as it is generated (arguments as
    for `stream_chunks`, with one sample)."""
    config = GenerationConfig.build(config, **options)
    require(config.num_samples == 1,
            "stream yields one continuation; use complete() or stream_chunks() for several")
    chunks = text_stream.stream_chunks(load_model(model, device, dtype, quantize=quantize),
                                       prompt, config)
    return (c.text for c in chunks if c.text)


def generate(model: ModelSource, prompt: str = "\n", config: GenerationConfig | None = None,
             **options: Any) -> str:
    """The whole continuation of `prompt` as one string (arguments as for `stream`)."""
    return "".join(stream(model, prompt, config, **options))


def load(ckpt: str | Path, device: str = "auto", dtype: str = "auto",
         block_size: int | None = None, quantize: str = "none") -> LoadedModel:
    """Load a run or checkpoint directory (a run resolves to its best/), or a Hugging Face
    GPT-2 folder, to generate from: the model in eval mode on `device` (auto | cpu | cuda |
    cuda:N | mps) with weights in `dtype` (auto: bf16 where it is faster), its tokenizer and
    the checkpoint's metadata. `block_size`: the context read at once (default: the trained
    one; longer only with rotary positions). `quantize="int8"`: the Linear weights stored in
    int8 (a quarter of fp32's bytes; CPU only, the rest in float32): faster decoding for a
    small loss in accuracy (docs/benchmarks.md, "Int8 decoding")."""
    return load_model(ckpt, device, dtype, block_size, quantize=quantize)


def chat_session(model: ModelSource, config: GenerationConfig | None = None, *,
                 you: str | None = None, device: str = "auto", dtype: str = "auto",
                 block_size: int | None = None, quantize: str = "none",
                 system: str | None = None, **options: Any) -> ChatSession:
    """A conversation, turn by turn (`ChatSession.reply`): a model fine-tuned with `sft`
    answers each message through its chat template (after the `system` message, if given);
    with a base model, `you` and a `speaker` play a scene in which you speak as `you` and the
    model answers as `speaker`. `block_size`: the context read at once (default: the trained
    one; longer only with rotary positions)."""
    config = GenerationConfig.build(config, **options)
    check_scene(config, you)  # before the (slow) load
    return ChatSession(load_model(model, device, dtype, block_size, quantize=quantize), config,
                       you, system)
