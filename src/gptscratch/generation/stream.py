"""The two entry points of text generation: `stream_chunks` yields each sample's text in
`Chunk`s as soon as it is safe to show, `complete` the finished `Completion`s. All is checked
before the first token, so a mistake never ends a half-printed text. Sampled rows go through
`engine`; beam search (`model.beam_search`) runs prompt by prompt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from gptscratch.checkpoints.load import LoadedModel
from gptscratch.data.tokenizers import Tokenizer, chat_template_of
from gptscratch.errors import UserError, require
from gptscratch.generation.config import GenerationConfig
from gptscratch.generation.engine import (
    Engine,
    Row,
    RowEvent,
    Sink,
    StopRule,
    StopStrings,
    apply_rules,
    check_rows_fit,
    rows_for,
)
from gptscratch.generation.script import (
    NextSpeakerStop,
    ScriptFormat,
    corpus_script,
    speaker_prompts,
)
from gptscratch.model.beam_search import beam_search
from gptscratch.model.gpt import GPT


@dataclass
class Completion:
    """One finished generation: the `prompt` as continued (with script mode's speaker heading),
    the continuation `text` (without the prompt or a stop string), every generated token's id
    and log-probability (those past a stop cut too), the `finish_reason` ("length" or "stop")
    and the beam search `score` (length-normalised log-probability; None when sampled)."""

    prompt: str
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"
    score: float | None = None


@dataclass
class Chunk:
    """A piece of one row's text; `completion` is set on the row's last chunk."""

    row: int
    text: str
    completion: Completion | None = None


class Generation:
    """The chunks of one `stream_chunks` call, and the prompts as the model continues them
    (`prompts[i]` is prompt i with script mode's speaker heading)."""

    def __init__(self, prompts: list[str], chunks: Iterator[Chunk]) -> None:
        self.prompts = prompts
        self._chunks = chunks

    def __iter__(self) -> Iterator[Chunk]:
        return self._chunks


def stream_chunks(loaded: LoadedModel, prompts: str | Sequence[str],
                  config: GenerationConfig, script: ScriptFormat | None = None, *,
                  prompt_ids: Sequence[Sequence[int]] | None = None) -> Generation:
    """Generate continuations of one or more prompts, yielding text chunks as they come.

    Row i * num_samples + j is sample j of prompt i; each row's last chunk carries its
    `Completion`. Prompts of any lengths share one batch. `script` (the corpus's speakers) is
    found from the checkpoint's training data when script mode needs it and none is given.
    `prompt_ids` gives each prompt's ids where its text cannot say them (a chat template's
    markers: `ChatTemplate.prompt_ids`); `prompts` then only name them. A model with a chat
    template stops at its end-of-turn marker.

    Raises:
        UserError: an empty prompt, an unknown speaker, a prompt the tokenizer cannot encode,
            or a batch that does not fit in memory.
    """
    if config.needs_script and script is None:
        script = corpus_script(loaded.checkpoint)
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    require(len(texts) > 0 and (prompt_ids is not None or all(p != "" for p in texts)),
            "a prompt is empty; give some text to continue")
    if prompt_ids is not None:
        require(len(prompt_ids) == len(texts) and all(prompt_ids), "each prompt needs its ids")
        ids = [list(p) for p in prompt_ids]
    else:
        texts = speaker_prompts(texts, config.speaker, script)
        ids = [encode_prompt(loaded.tokenizer, text) for text in texts]
    rules = _stop_rules(config, script, loaded.tokenizer)
    rows = config.beams if config.uses_beams else len(texts) * config.num_samples
    check_rows_fit(loaded.model, rows, config.use_cache)
    run = _beam_chunks if config.uses_beams else _sampled_chunks
    return Generation(texts, run(loaded.model, loaded.tokenizer, texts, ids, config, rules))


def complete(loaded: LoadedModel, prompts: str | Sequence[str],
             config: GenerationConfig, *,
             prompt_ids: Sequence[Sequence[int]] | None = None) -> list[Completion]:
    """The finished `Completion`s of `stream_chunks`, in its row order."""
    done: dict[int, Completion] = {}
    for chunk in stream_chunks(loaded, prompts, config, prompt_ids=prompt_ids):
        if chunk.completion is not None:
            done[chunk.row] = chunk.completion
    return [done[i] for i in sorted(done)]


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    ids = tokenizer.encode(prompt)
    if not ids:
        raise UserError("the prompt is empty and the tokenizer has no start token; give some text")
    return ids


def _stop_rules(config: GenerationConfig, script: ScriptFormat | None,
                tokenizer: Tokenizer) -> list[StopRule]:
    rules: list[StopRule] = [StopStrings(config.stop)] if config.stop else []
    rules += end_of_turn_rules(tokenizer)
    if config.until_next_speaker:
        rules.append(NextSpeakerStop(script))
    return rules


def end_of_turn_rules(tokenizer: Tokenizer) -> list[StopRule]:
    """Where a model with a chat template ends: an answer stops at its end-of-turn marker (a
    base model's text has no turns: no rule)."""
    template = chat_template_of(tokenizer)
    return [StopStrings([template.end])] if template is not None else []


def _sampled_chunks(model: GPT, tokenizer: Tokenizer, texts: list[str], ids: list[list[int]],
                    config: GenerationConfig, rules: list[StopRule]) -> Iterator[Chunk]:
    """Sample every row in one batch of the engine; a row that ends leaves the batch."""
    n = config.num_samples
    events: list[tuple[int, RowEvent]] = []

    def sink(index: int) -> Sink:
        return lambda event: events.append((index, event))

    requests = rows_for(ids, n, config.max_new_tokens, config.sampling, config.seed, rules)
    rows = [Row(request, sink(i)) for i, request in enumerate(requests)]
    engine = Engine(model, tokenizer, config.use_cache)
    engine.join(rows)
    while True:
        for i, event in events:
            row = rows[i]
            done = None
            if event.finish_reason is not None:
                done = Completion(texts[i // n], row.text, row.generated, row.logprobs,
                                  event.finish_reason)
            yield Chunk(i, event.text, done)
        events.clear()
        if not engine.running:
            return
        engine.step()


def _beam_chunks(model: GPT, tokenizer: Tokenizer, texts: list[str], ids: list[list[int]],
                 config: GenerationConfig, rules: list[StopRule]) -> Iterator[Chunk]:
    """Beam search, prompt by prompt: the best `num_samples` hypotheses of each, whole."""

    def ended(new_ids: list[int]) -> bool:
        return apply_rules(tokenizer.decode(new_ids), rules)[0] is not None

    for i, (text, prompt_ids) in enumerate(zip(texts, ids, strict=True)):
        hypotheses = beam_search(model, prompt_ids, config.max_new_tokens, config.beam,
                                 is_finished=ended if rules else None, sampling=config.sampling,
                                 use_cache=config.use_cache)
        for j, h in enumerate(hypotheses[:config.num_samples]):
            out = tokenizer.decode(h.ids)
            cut = apply_rules(out, rules)[0] if rules else None
            completion = Completion(text, out if cut is None else out[:cut], h.ids, [],
                                    "stop" if h.finished else "length", h.score)
            yield Chunk(i * config.num_samples + j, completion.text, completion)
