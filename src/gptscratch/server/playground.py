"""The playground: a page at `/` to watch the model write token by token, and see why.

Two native routes feed it (OpenAI's API has no fields for what they show):
`POST /playground/generate` streams each token's id, text, probability and likeliest
alternatives, through the same engine (and batch) as every request; `POST /playground/attention`
gives the last layer's attention weights per head at one position (from the model's `Trace`):
what the model looked at when it chose the next token. The page (`static/playground.html`) is
plain HTML, CSS and JavaScript: no CDN, no build step.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from gptscratch.generation.engine import rows_for
from gptscratch.model.gpt import GPT, Trace
from gptscratch.server.batching import Job
from gptscratch.server.completions import Served, event_stream
from gptscratch.server.errors import APIError
from gptscratch.server.schemas import (
    MAX_LOGPROBS,
    GenerationRequest,
    check_request,
    encode,
    sampling_config,
)

PAGE = Path(__file__).parent / "static" / "playground.html"


class PlaygroundRequest(GenerationRequest):
    """A prompt to continue, with `top` alternatives per token."""

    prompt: str
    top: int = 5


class AttentionRequest(BaseModel):
    """Token ids (the page has them) and the query position (default: the last)."""

    ids: list[int]
    position: int | None = None


@cache
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


def attention_at(model: GPT, ids: list[int], position: int) -> list[list[float]]:
    """The last layer's attention weights of query `position` over positions 0..position,
    one list per head: (H, position + 1)."""
    device = model.transformer.wte.weight.device
    trace = Trace()
    with torch.inference_mode():
        model(torch.tensor([ids], device=device), trace=trace)
        last = trace.blocks[-1]["weights"]  # (1, H, T, T)
        weights: list[list[float]] = last[0, :, position, :position + 1].float().tolist()
    return weights


async def _token_events(job: Job, tokenizer: Any, prompt_ids: list[int]
                        ) -> AsyncIterator[dict[str, Any]]:
    yield {"prompt_ids": prompt_ids, "prompt_tokens": [tokenizer.decode([i]) for i in prompt_ids]}
    async for _, event in job.events():
        for t in event.tokens:
            yield {"id": t.id, "text": t.text, "prob": math.exp(t.logprob or 0.0),  # never None
                   "top": [{"text": text, "prob": math.exp(lp)} for text, lp in t.top]}
        if event.finish_reason is not None:
            yield {"finish_reason": event.finish_reason, "error": event.error}


def add_playground(app: FastAPI, served: Served, auth: list[Any]) -> None:
    """The page at `/` and its two routes."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page())

    @app.post("/playground/generate", dependencies=auth)
    async def generate(body: PlaygroundRequest) -> Response:
        max_tokens = check_request(body, served.config, 100)
        if not 0 <= body.top <= MAX_LOGPROBS:
            raise APIError(400, f"top ({body.top}) must be between 0 and {MAX_LOGPROBS}", "top")
        ids = encode(served.loaded.tokenizer, body.prompt, served.config, "prompt")
        job = Job(served.engine, rows_for([ids], 1, max_tokens, sampling_config(body),
                                          body.seed, [], body.top))
        return event_stream(_token_events(job, served.loaded.tokenizer, ids))

    @app.post("/playground/attention", dependencies=auth)
    async def attention(body: AttentionRequest) -> dict[str, Any]:
        model = served.loaded.model
        vocab, block = model.config.vocab_size, model.config.block_size
        if not body.ids or not all(0 <= i < vocab for i in body.ids):
            raise APIError(400, f"ids must be 1 or more token ids in [0, {vocab})", "ids")
        ids = body.ids[-block:]  # the model sees at most block_size tokens
        shift = len(body.ids) - len(ids)
        position = len(ids) - 1 if body.position is None else body.position - shift
        if not 0 <= position < len(ids):
            raise APIError(400, f"position ({body.position}) must be one of the last {block} "
                                f"positions of ids (< {len(body.ids)})", "position")
        heads = await asyncio.to_thread(attention_at, model, ids, position)
        tokenizer = served.loaded.tokenizer
        return {"layer": model.config.n_layer - 1, "position": position + shift,
                "first": shift, "tokens": [tokenizer.decode([i]) for i in ids[:position + 1]],
                "heads": heads}
