"""The HTTP application: OpenAI's routes over one served model, and how to run it.

`build_app` wires the routes (health, models, completions, chat completions, the tokenizer's
routes that evaluation harnesses use, the playground) to a `Served` model and its engine,
behind an optional Bearer API key (as the `openai` client sends it), with OpenAI-shaped errors.
CORS is off: a page on another origin cannot call the server.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from gptscratch.checkpoints.load import LoadedModel
from gptscratch.server.batching import BatchingEngine
from gptscratch.server.completions import Served, chat, complete
from gptscratch.server.config import ServeConfig
from gptscratch.server.errors import APIError, install_error_handlers
from gptscratch.server.playground import add_playground
from gptscratch.server.schemas import ChatRequest, CompletionRequest
from gptscratch.server.tokenizing import add_tokenizer_routes

log = logging.getLogger("gptscratch")


def _key_check(api_key: str | None) -> Any:
    """A dependency refusing requests without `Authorization: Bearer <api_key>` (if one is set)."""

    async def check(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), api_key):
            raise APIError(401, "invalid or missing API key; send 'Authorization: Bearer "
                                "<key>' with the key the server was started with",
                           code="invalid_api_key")

    return Depends(check)


def build_app(served: Served) -> FastAPI:
    """The FastAPI application serving `served`; its engine starts and stops with the app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not served.engine.alive:
            served.engine.start()
        served.script  # noqa: B018  (the corpus's speakers, found before the first chat)
        try:
            yield
        finally:
            served.engine.stop()

    app = FastAPI(title="gptscratch", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.served = served  # for tests and tools that look inside
    install_error_handlers(app)
    auth = [_key_check(served.config.api_key)]
    started = int(time.time())

    @app.get("/health")
    async def health() -> dict[str, Any]:
        if not served.engine.alive:
            raise APIError(503, "the generation engine is not running", code="engine_stopped")
        return {"status": "ok", "model": served.name}

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": served.name, "object": "model", "created": started, "owned_by": "gptscratch",
             "context_length": served.loaded.model.config.block_size}]}

    @app.get("/v1/models/{model_id}", dependencies=auth)
    async def model(model_id: str) -> dict[str, Any]:
        served.check_model(model_id)
        return {"id": served.name, "object": "model", "created": started, "owned_by": "gptscratch"}

    @app.post("/v1/completions", dependencies=auth)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await complete(served, body, request.is_disconnected)

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        return await chat(served, body, request.is_disconnected)

    add_tokenizer_routes(app, served, auth)
    add_playground(app, served, auth)
    return app


def run(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `app` until Ctrl-C (uvicorn's h11 protocol: its ASGI 2.3 lets a streaming
    response notice a client that disconnects, so the row is freed at once)."""
    import uvicorn

    log.info("serving on http://%s:%d/v1 (OpenAI-compatible; Ctrl-C stops)", host, port)
    # A browser reaches a server listening on every interface through this machine's loopback.
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    log.info("playground: open http://%s:%d/ in a browser to generate text and see, token by "
             "token, how sure the model was and what it attended to", local, port)
    uvicorn.run(app, host=host, port=port, http="h11", log_level="warning")


def create_app(loaded: LoadedModel, config: ServeConfig | None = None) -> FastAPI:
    """The application serving a loaded model, with its own (not yet started) engine."""
    config = config or ServeConfig()
    engine = BatchingEngine(loaded.model, loaded.tokenizer, config.max_batch, config.max_queue)
    served = Served(loaded, engine, config)
    return build_app(served)
