"""The two generation endpoints: /v1/completions and /v1/chat/completions.

Each checks its request (`schemas`), queues its rows (`batching.Job`) and answers whole or as
server-sent events (`responses`); a chat's messages become one script-mode prompt
(`chat_template`) whose answer ends where the next speaker begins.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from gptscratch.checkpoints.load import LoadedModel
from gptscratch.data.tokenizers import chat_template_of
from gptscratch.generation.engine import StopRule, StopStrings, rows_for
from gptscratch.generation.script import ScriptFormat, corpus_script
from gptscratch.server.batching import BatchingEngine, Job
from gptscratch.server.chat_template import next_speaker_stop, render_chat, template_prompt
from gptscratch.server.config import ServeConfig
from gptscratch.server.errors import APIError, error_body
from gptscratch.server.responses import (
    Finished,
    Header,
    chat_choice,
    chat_delta,
    completion_choice,
    sse,
    usage,
)
from gptscratch.server.schemas import (
    ChatRequest,
    CompletionRequest,
    GenerationRequest,
    check_ids,
    check_length,
    check_request,
    encode,
    sampling_config,
)

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
ClientLeft = Callable[[], Awaitable[bool]] | None


@dataclass
class Served:
    """What the endpoints share: the model, its engine and the server's settings."""

    loaded: LoadedModel
    engine: BatchingEngine
    config: ServeConfig

    @functools.cached_property
    def name(self) -> str:
        """`config.name`, else the run folder (`out/shakespeare-char` for its best/ or
        latest/ checkpoint), else the checkpoint folder."""
        if self.config.name is not None or self.loaded.checkpoint is None:
            return self.config.name or "gptscratch"
        path = self.loaded.checkpoint.path.resolve()
        return path.parent.name if path.name in ("best", "latest") else path.name

    @functools.cached_property
    def script(self) -> ScriptFormat | None:
        """The training corpus's speakers, for chat (found once, as the server starts)."""
        return corpus_script(self.loaded.checkpoint)

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.name:
            raise APIError(404, f"the model '{model}' does not exist; this server serves "
                                f"'{self.name}'", "model", "model_not_found")


def event_stream(objects: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(sse(objects), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _results(job: Job, left: ClientLeft) -> list[Finished] | None:
    """Every row's whole result (None if the client left first); a failed row is a 500, or a
    503 while the server shuts down."""
    collected = await job.collect(left)
    results = None if collected is None else [Finished.of(events) for events in collected]
    broken = next((r for r in results or [] if r.finish_reason == "error"), None)
    if broken is not None:
        raise APIError(500 if broken.error != "the server is shutting down" else 503,
                       f"generation failed: {broken.error}")
    return results


def _start(served: Served, req: GenerationRequest, prompts: list[list[int]], max_tokens: int,
           rules: list[StopRule], top: int | None, score_prompt: bool = False) -> Job:
    template = chat_template_of(served.loaded.tokenizer)
    if template is not None:  # a model fine-tuned to take turns ends at its end-of-turn marker
        rules = [*rules, StopStrings([template.end])]
    return Job(served.engine, rows_for(prompts, req.n, max_tokens, sampling_config(req),
                                       req.seed, rules, top, score_prompt))


def _prompts(served: Served, prompt: Any) -> tuple[list[str], list[list[int]]]:
    """The request's prompts (one text, several texts, one list of token ids, or several) as
    texts (ids decoded, for echo) and as token ids."""
    tokenizer, limits = served.loaded.tokenizer, served.config
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt is an empty list; give at least one prompt", "prompt")
    vocab = served.loaded.model.config.vocab_size
    ids = [encode(tokenizer, p, limits, "prompt") if isinstance(p, str)
           else check_ids(list(p), vocab, limits, "prompt") for p in prompt]
    texts = [p if isinstance(p, str) else tokenizer.decode(i)
             for p, i in zip(prompt, ids, strict=True)]
    return texts, ids


async def complete(served: Served, req: CompletionRequest, left: ClientLeft = None) -> Response:
    """POST /v1/completions; `left` tells whether the client has gone (`Job.collect`)."""
    served.check_model(req.model)
    max_tokens = check_request(req, served.config, DEFAULT_COMPLETION_TOKENS)
    texts, prompts = _prompts(served, req.prompt)
    rules: list[StopRule] = [StopStrings(req.stops)] if req.stops else []
    scored = req.echo and req.logprobs is not None
    job = _start(served, req, prompts, max_tokens, rules, req.logprobs, scored)
    header = Header("text_completion", served.name, "cmpl")
    used = usage(sum(map(len, prompts)), 0)
    if req.stream:
        return event_stream(_completion_chunks(job, header, req, texts, used))
    results = await _results(job, left)
    if results is None:
        return Response(status_code=499)  # nobody is listening (nginx's code for this)
    choices = []
    for index, result in enumerate(results):
        echo = texts[index // req.n] if req.echo else ""
        tokens = [*result.prompt_tokens, *result.tokens] if req.logprobs is not None else None
        choices.append(completion_choice(index, echo + result.text, tokens,
                                         result.finish_reason, 0 if scored else len(echo)))
    used = usage(used["prompt_tokens"], sum(r.completion_tokens for r in results))
    return JSONResponse(header.wrap(choices, usage=used))


async def _completion_chunks(job: Job, header: Header, req: CompletionRequest, texts: list[str],
                             used: dict[str, int]) -> AsyncIterator[dict[str, Any]]:
    """Echoed prompts first (with logprobs, each when its scores arrive), then the text."""
    generated = 0
    offsets = [len(texts[i // req.n]) if req.echo else 0 for i in range(len(job.handles))]
    if req.echo and req.logprobs is None:
        for index in range(len(job.handles)):
            yield header.wrap([completion_choice(index, texts[index // req.n], None, None)])
    async for index, event in job.events():
        if event.finish_reason == "error":
            yield error_body(500, f"generation failed: {event.error}")
            return
        if event.prompt_tokens:
            yield header.wrap([completion_choice(index, texts[index // req.n],
                                                 event.prompt_tokens, None)])
        tokens = event.tokens if req.logprobs is not None else None
        if event.text or event.finish_reason or tokens:
            yield header.wrap([completion_choice(index, event.text, tokens,
                                                 event.finish_reason, offsets[index])])
        offsets[index] += len(event.text)
        generated += event.completion_tokens
    if req.stream_options is not None and req.stream_options.include_usage:
        yield header.wrap([], usage=usage(used["prompt_tokens"], generated))


async def chat(served: Served, req: ChatRequest, left: ClientLeft = None) -> Response:
    """POST /v1/chat/completions; `left` as for `complete`."""
    served.check_model(req.model)
    max_tokens = check_request(req, served.config, served.config.max_tokens_per_request)
    if not req.messages:
        raise APIError(400, "messages is empty; give at least one user message", "messages")
    tokenizer = served.loaded.tokenizer
    template = chat_template_of(tokenizer)
    rules: list[StopRule]
    if template is not None:  # a model fine-tuned to take turns: its template
        ids = check_length(template_prompt(req.messages, tokenizer, template), served.config,
                           "messages")
        rules = []
    else:  # a base model: the conversation as a scene of its corpus
        prompt, _ = render_chat(req.messages, served.script)
        ids = encode(tokenizer, prompt, served.config, "messages")
        rules = [next_speaker_stop(served.script)]
    if req.stops:
        rules.insert(0, StopStrings(req.stops))
    top = (req.top_logprobs or 0) if req.logprobs else None
    job = _start(served, req, [ids], max_tokens, rules, top)
    header = Header("chat.completion", served.name, "chatcmpl")
    if req.stream:
        header.object = "chat.completion.chunk"
        return event_stream(_chat_chunks(job, header, req, len(ids)))
    results = await _results(job, left)
    if results is None:
        return Response(status_code=499)  # nobody is listening (nginx's code for this)
    choices = [chat_choice(i, r.text, r.tokens if req.logprobs else None,
                           r.finish_reason) for i, r in enumerate(results)]
    used = usage(len(ids), sum(r.completion_tokens for r in results))
    return JSONResponse(header.wrap(choices, usage=used))


async def _chat_chunks(job: Job, header: Header, req: ChatRequest,
                       prompt_tokens: int) -> AsyncIterator[dict[str, Any]]:
    for index in range(len(job.handles)):
        yield header.wrap([chat_delta(index, {"role": "assistant", "content": ""}, None, None)])
    generated = 0
    async for index, event in job.events():
        if event.finish_reason == "error":
            yield error_body(500, f"generation failed: {event.error}")
            return
        tokens = event.tokens if req.logprobs else None
        if event.text or tokens:
            yield header.wrap([chat_delta(index, {"content": event.text}, tokens, None)])
        if event.finish_reason is not None:
            yield header.wrap([chat_delta(index, {}, None, event.finish_reason)])
        generated += event.completion_tokens
    if req.stream_options is not None and req.stream_options.include_usage:
        yield header.wrap([], usage=usage(prompt_tokens, generated))
