"""The Python API for serving: a model behind an OpenAI-compatible HTTP API.

    api.serve("out/shakespeare-char", port=8000)        # blocks; Ctrl-C stops it
    app = api.server_app("out/shakespeare-char")        # the FastAPI app, to run yourself

Then any OpenAI client talks to it: `OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="x")`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import TYPE_CHECKING, Any

from gptscratch.api.generation import ModelSource
from gptscratch.checkpoints.load import load_model
from gptscratch.errors import UserError, require
from gptscratch.server.config import ServeConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

SERVE_INSTALL = 'pip install -c constraints.txt -e ".[serve]"'


def require_serve_extra() -> None:
    """Raise a one-line error when the server's libraries are not installed."""
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"serving needs {' and '.join(missing)} (the serve extra); run: "
                        f"{SERVE_INSTALL}")


def server_app(model: ModelSource, config: ServeConfig | None = None, *, device: str = "auto",
               dtype: str = "auto", block_size: int | None = None, quantize: str = "none",
               **options: Any) -> FastAPI:
    """The server's FastAPI application; its engine starts and stops with the application.

    Args:
        model: a run or checkpoint directory, or a model from `load`.
        config: the server's settings (`server.config.ServeConfig`: name, max_batch,
            max_tokens_per_request, max_prompt_tokens, max_queue, api_key); `options` replace
            single ones by name. They are checked before the model loads.
        device, dtype: where and in which dtype to run a checkpoint loaded here.
        quantize: none, or int8 (the Linear weights in int8, on a CPU: `api.load`).
        block_size: the context each sequence reads at once (default: the trained one;
            longer only with rotary positions: `checkpoints.load.with_context`).
    """
    config = serve_config(config, options)
    require_serve_extra()
    from gptscratch.server.app import create_app

    return create_app(load_model(model, device, dtype, block_size, quantize=quantize), config)


def serve(model: ModelSource, host: str = "127.0.0.1", port: int = 8000, *,
          device: str = "auto", dtype: str = "auto", block_size: int | None = None,
          quantize: str = "none", **options: Any) -> None:
    """Serve a model until Ctrl-C (arguments as for `server_app`)."""
    config = serve_config(None, {**options, "host": host, "port": port})
    app = server_app(model, config, device=device, dtype=dtype, block_size=block_size,
                     quantize=quantize)
    from gptscratch.server.app import run

    run(app, config.host, config.port)


def serve_config(config: ServeConfig | None, options: dict[str, Any]) -> ServeConfig:
    """`config` (or the defaults) with some settings replaced, by name.

    Raises:
        UserError: an unknown setting, or a value its rule refuses.
    """
    names = {f.name for f in dataclasses.fields(ServeConfig)}
    unknown = sorted(set(options) - names)
    require(not unknown, f"unknown server setting(s) {unknown}; the settings are: "
                         f"{', '.join(sorted(names))}")
    return dataclasses.replace(config or ServeConfig(), **options)
