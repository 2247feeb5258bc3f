"""The request bodies the server accepts, in OpenAI's field names, and the checks on them.

Pydantic checks the types (a wrong type is a 422 naming the field); `check_request` checks
the values against the rules of `model.sampling.SamplingConfig` and the server's limits (a
400 naming the field, or a 413 for a prompt that is too long). Fields OpenAI defines that
the server has no use for (`user`, `suffix`, `best_of`...) are ignored; `top_k`, `min_p` and
`repetition_penalty` are accepted as extras (the `openai` client's `extra_body`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from gptscratch.model.sampling import SamplingConfig
from gptscratch.server.errors import APIError

MAX_N = 16  # choices per request
MAX_LOGPROBS = 20  # alternatives per token
MAX_STOPS = 16


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: tokens to generate and prompt tokens."""

    max_tokens: int = 512
    max_prompt_tokens: int = 8192


class StreamOptions(BaseModel):
    include_usage: bool = False


class GenerationRequest(BaseModel):
    """The fields completions and chat completions share."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_k: int | None = None
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(GenerationRequest):
    """POST /v1/completions: `prompt` is text, token ids, or a list of either; `logprobs` is
    the number of alternatives per token (0: the chosen token's only); `echo` repeats the
    prompt before the text (with `logprobs`, with its tokens' log-probabilities)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ChatMessage(BaseModel):
    """A message; `name` is the character who speaks it (see `chat_template`)."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatRequest(GenerationRequest):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None


def _require(ok: bool, message: str, param: str, status: int = 400) -> None:
    if not ok:
        raise APIError(status, message, param)


def check_request(req: GenerationRequest, limits: Limits, default_max_tokens: int) -> int:
    """Check the values the types cannot; return the tokens to generate per choice.

    Raises:
        APIError: 400 naming the field, its value and the rule.
    """
    asked = req.max_tokens
    if isinstance(req, ChatRequest) and req.max_completion_tokens is not None:
        asked = req.max_completion_tokens
    max_tokens = min(default_max_tokens, limits.max_tokens) if asked is None else asked
    _require(max_tokens >= 0, f"max_tokens ({max_tokens}) must be >= 0", "max_tokens")
    _require(max_tokens <= limits.max_tokens,
             f"max_tokens ({max_tokens}) is more than this server allows per request "
             f"({limits.max_tokens})", "max_tokens")
    _require(1 <= req.n <= MAX_N, f"n ({req.n}) must be between 1 and {MAX_N}", "n")
    stops = req.stops
    _require(len(stops) <= MAX_STOPS, f"stop has {len(stops)} strings; at most {MAX_STOPS}",
             "stop")
    _require(all(stops), "a stop string is empty", "stop")
    name, alternatives = "logprobs", None
    if isinstance(req, ChatRequest):
        name, alternatives = "top_logprobs", req.top_logprobs
    elif isinstance(req, CompletionRequest):
        alternatives = req.logprobs
    if alternatives is not None:
        _require(0 <= alternatives <= MAX_LOGPROBS,
                 f"{name} ({alternatives}) must be between 0 and {MAX_LOGPROBS}", name)
    sampling_config(req)
    return max_tokens


def sampling_config(req: GenerationRequest) -> SamplingConfig:
    """The request's sampling settings, checked by the rules of `SamplingConfig`."""
    rules = [
        ("temperature", req.temperature >= 0, "must be >= 0 (0 is greedy)"),
        ("top_p", 0 < req.top_p <= 1, "must be in (0, 1]"),
        ("top_k", req.top_k is None or req.top_k >= 1, "must be >= 1"),
        ("min_p", 0 <= req.min_p <= 1, "must be in [0, 1]"),
        ("repetition_penalty", 0 < req.repetition_penalty <= 10, "must be in (0, 10]"),
        ("presence_penalty", -2 <= req.presence_penalty <= 2, "must be in [-2, 2]"),
        ("frequency_penalty", -2 <= req.frequency_penalty <= 2, "must be in [-2, 2]"),
    ]
    for name, ok, rule in rules:
        _require(ok, f"{name} ({getattr(req, name)}) {rule}", name)
    return SamplingConfig(req.temperature, req.top_k, req.top_p, req.min_p,
                          req.repetition_penalty, req.frequency_penalty, req.presence_penalty)
