"""The Python API for serving: a model behind an OpenAI-compatible HTTP API.

    api.serve("out/shakespeare-char", port=8000)        # blocks; Ctrl-C stops it
    app = api.server_app("out/shakespeare-char")        # the FastAPI app, to run yourself

Then any OpenAI client talks to it: `OpenAI(base_url="http://127.0.0.1:8000/v1",
api_key="x")`. The server needs the `serve` extra (fastapi, uvicorn); without it these
functions raise a one-line `UserError` naming the pip command.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from gptscratch.api.generation import ModelSource
from gptscratch.checkpoints.load import load_model
from gptscratch.errors import UserError, require

if TYPE_CHECKING:
    from fastapi import FastAPI

SERVE_INSTALL = 'pip install -c constraints.txt -e ".[serve]"'


def require_serve_extra() -> None:
    """Raise a one-line error when the server's libraries are not installed."""
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"serving needs {' and '.join(missing)} (the serve extra); run: "
                        f"{SERVE_INSTALL}")


def server_app(model: ModelSource, *, name: str | None = None, max_batch: int | None = None,
               max_tokens_per_request: int = 512, max_prompt_tokens: int = 8192,
               max_queue: int = 64, api_key: str | None = None, device: str = "auto",
               dtype: str = "auto", block_size: int | None = None) -> FastAPI:
    """The server's FastAPI application for a run or checkpoint directory (or a loaded
    model); its engine starts and stops with the application.

    Args:
        model: a run or checkpoint directory, or a model from `load`.
        name: the model's name in the API (default: its run folder's name).
        max_batch: the most rows (sequences) decoded together (None: as many as fit a
            quarter of the free memory, at most 64; `generation.engine.default_max_batch`).
        max_tokens_per_request: the largest `max_tokens` a request may ask for.
        max_prompt_tokens: the longest prompt accepted, in tokens (longer: 413).
        max_queue: the most rows waiting for a place in the batch (more: 429).
        api_key: if set, every /v1 request must send `Authorization: Bearer <api_key>`.
        device, dtype: where and in which dtype to run a checkpoint loaded here.
        block_size: the context each sequence reads at once (default: the trained one;
            longer only with rotary positions: `checkpoints.load.with_context`).
    """
    rows = 1 if max_batch is None else max_batch  # None: chosen by the engine
    for field, value in (("max_batch", rows), ("max_queue", max_queue),
                         ("max_tokens_per_request", max_tokens_per_request),
                         ("max_prompt_tokens", max_prompt_tokens)):
        flag = "--" + field.replace("_", "-")
        require(isinstance(value, int) and value >= 1,
                f"{field} ({value}) must be >= 1; try {flag} 8")
    require(api_key is None or api_key.strip() != "", "--api-key is empty; give a key or "
            "leave it out")
    require_serve_extra()
    from gptscratch.server.app import create_app
    from gptscratch.server.schemas import Limits

    limits = Limits(max_tokens_per_request, max_prompt_tokens)
    return create_app(load_model(model, device, dtype, block_size), limits, name=name,
                      max_batch=max_batch, max_queue=max_queue, api_key=api_key)


def serve(model: ModelSource, host: str = "127.0.0.1", port: int = 8000,
          **options: Any) -> None:
    """Serve a model until Ctrl-C (options as for `server_app`)."""
    require(0 <= port <= 65535, f"port ({port}) must be in 0..65535; try --port 8000")
    app = server_app(model, **options)
    from gptscratch.server.app import run

    run(app, host, port)
