"""OpenAI's response shapes, built from the engine's `RowEvent`s: `text_completion` and
`chat.completion` objects, whole or as streamed chunks, with OpenAI's two log-probability
layouts and the usage counts; `sse` frames a stream as server-sent events.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptscratch.generation.engine import RowEvent, TokenInfo


@dataclass
class Header:
    """What every object of one response shares."""

    object: str
    model: str
    prefix: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.id = f"{self.prefix}-{uuid.uuid4().hex}"

    def wrap(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": self.object, "created": self.created,
                "model": self.model, "choices": choices, **extra}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_logprobs(tokens: Sequence[TokenInfo], offset: int) -> dict[str, Any]:
    """The legacy completions layout: parallel lists, `top_logprobs` as {token: logprob}."""
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.text)
    return {"tokens": [t.text for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [None if t.logprob is None else dict(t.top) for t in tokens],
            "text_offset": offsets}  # (a prompt's first token has no score, as in OpenAI's)


def chat_logprobs(tokens: Sequence[TokenInfo]) -> dict[str, Any]:
    """The chat layout: one entry per token with its bytes and alternatives."""
    def entry(text: str, logprob: float | None) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**entry(t.text, t.logprob),
                         "top_logprobs": [entry(a, lp) for a, lp in t.top]} for t in tokens],
            "refusal": None}


@dataclass
class Finished:
    """A row's whole result, gathered from its events."""

    text: str
    tokens: list[TokenInfo]
    finish_reason: str
    completion_tokens: int
    error: str | None = None
    prompt_tokens: tuple[TokenInfo, ...] = ()

    @classmethod
    def of(cls, events: Sequence[RowEvent]) -> Finished:
        last = events[-1]
        return cls("".join(e.text for e in events), [t for e in events for t in e.tokens],
                   last.finish_reason or "length", last.completion_tokens, last.error,
                   tuple(t for e in events for t in e.prompt_tokens))


def completion_choice(index: int, text: str, tokens: Sequence[TokenInfo] | None,
                      finish_reason: str | None, offset: int = 0) -> dict[str, Any]:
    logprobs = None if tokens is None else completion_logprobs(tokens, offset)
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def chat_choice(index: int, text: str, tokens: Sequence[TokenInfo] | None,
                finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None if tokens is None else chat_logprobs(tokens),
            "finish_reason": finish_reason}


def chat_delta(index: int, delta: dict[str, Any], tokens: Sequence[TokenInfo] | None,
               finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta,
            "logprobs": None if tokens is None else chat_logprobs(tokens),
            "finish_reason": finish_reason}


async def sse(objects: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Server-sent events: one `data: {json}` line per object, then `data: [DONE]`."""
    async for obj in objects:
        yield f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"
