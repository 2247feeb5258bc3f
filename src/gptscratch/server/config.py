"""The server's settings (`ServeConfig`), each declared once: the `serve` flags and help
(`cli/parser.py`) and `api.server_app`'s keyword arguments are made from them, and checked
before the model loads. Imports nothing heavy (no fastapi, no torch), so the CLI can read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gptscratch.errors import require
from gptscratch.settings import check_settings, setting


@dataclass(frozen=True)
class ServeConfig:
    """Where the server listens, and what one request and the whole batch may hold."""

    host: str = setting("127.0.0.1", "address to listen on (default 127.0.0.1: this machine only)")
    port: int = setting(8000, "port (default 8000)", low=0, high=65535, example=8000)
    max_batch: int | None = setting(
        None, "the most sequences decoded together (default: 64, or as many as a quarter of "
              "the free memory holds)", low=1, example=8, metavar="N")
    max_tokens_per_request: int = setting(
        512, "the largest max_tokens a request may ask for (default 512)", low=1, example=512,
        metavar="N")
    max_prompt_tokens: int = setting(
        8192, "the longest prompt accepted, in tokens (default 8192)", low=1, example=8192,
        metavar="N")
    max_queue: int = setting(
        64, "sequences that may wait for a place in the batch; more get HTTP 429 (default 64)",
        low=1, example=64, metavar="N")
    api_key: str | None = setting(
        None, "require 'Authorization: Bearer KEY' on every /v1 request", metavar="KEY")
    name: str | None = setting(
        None, "the model's name in the API (default: its run folder's name)")

    def __post_init__(self) -> None:
        check_settings(self)
        require(self.api_key is None or self.api_key.strip() != "",
                "api_key is empty; give a key or leave it out")
