"""The request bodies the server accepts, in OpenAI's field names, and the checks on them.

The sampling fields come from their one declaration (`SamplingConfig`, via `request_model`),
with OpenAI's defaults where they differ. Pydantic checks the types (a 422 naming the field);
`check_request` checks the values (a 400 naming the field) and the server's limits
(`ServeConfig`). Fields the server has no use for (`user`, `suffix`, `best_of`...) are ignored;
`top_k`, `min_p` and `repetition_penalty` are extras (the `openai` client's `extra_body`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, create_model

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.errors import SettingError, UserError
from gptscratch.model.config import SamplingConfig
from gptscratch.server.config import ServeConfig
from gptscratch.server.errors import APIError
from gptscratch.settings import rules

MAX_N = 16  # choices per request
MAX_LOGPROBS = 20  # alternatives per token
MAX_STOPS = 16


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


def request_model(declaration: type, **defaults: Any) -> type[BaseModel]:
    """A request body with a field for every setting of `declaration` (its type, and its
    default unless `defaults` gives the API's own)."""
    hints = get_type_hints(declaration)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], defaults.get(f.name, f.default))
        for f in dataclasses.fields(declaration) if f.name in rules(declaration)}
    return create_model(f"{declaration.__name__}Fields", __base__=_Body, **fields)


class GenerationRequest(request_model(SamplingConfig, temperature=1.0)):  # type: ignore[misc]
    """Both endpoints' fields: the sampling settings (with OpenAI's temperature, 1.0) and these."""

    model: str | None = None
    max_tokens: int | None = None
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

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


def check_request(req: GenerationRequest, limits: ServeConfig, default_max_tokens: int) -> int:
    """Check the values the types cannot; return the tokens to generate per choice.

    Raises:
        APIError: 400 naming the field, its value and the rule.
    """
    asked = req.max_tokens
    if isinstance(req, ChatRequest) and req.max_completion_tokens is not None:
        asked = req.max_completion_tokens
    most = limits.max_tokens_per_request
    max_tokens = min(default_max_tokens, most) if asked is None else asked
    _require(max_tokens >= 0, f"max_tokens ({max_tokens}) must be >= 0", "max_tokens")
    _require(max_tokens <= most, f"max_tokens ({max_tokens}) is more than this server allows "
                                 f"per request ({most})", "max_tokens")
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


def sampling_config(req: BaseModel, declaration: type[SamplingConfig] = SamplingConfig
                    ) -> SamplingConfig:
    """The request's sampling settings; raises APIError 400 naming the first field at fault."""
    try:
        return declaration(**{name: getattr(req, name) for name in rules(declaration)})
    except SettingError as e:
        raise APIError(400, e.describe(), e.setting) from None


def check_length(ids: list[int], limits: ServeConfig, param: str) -> list[int]:
    """Raises APIError 413 for a prompt over the server's limit; else returns it."""
    if len(ids) > limits.max_prompt_tokens:
        raise APIError(413, f"{param} has {len(ids):,} tokens; this server takes at most "
                            f"{limits.max_prompt_tokens:,}", param, "prompt_too_long")
    return ids


def encode(tokenizer: Tokenizer, text: str, limits: ServeConfig, param: str) -> list[int]:
    """A prompt's token ids; an empty prompt is the end-of-text token where there is one.

    Raises:
        APIError: 400 for characters the tokenizer cannot encode or an empty prompt without
            an end-of-text token; 413 for a prompt over the server's limit.
    """
    try:
        ids = tokenizer.encode(text)
    except UserError as e:
        raise unknown_characters(e, param) from None
    if not ids:
        if tokenizer.eot_id is None:
            raise APIError(400, f"{param} is empty; give some text to continue", param)
        ids = [tokenizer.eot_id]
    return check_length(ids, limits, param)


def unknown_characters(error: UserError, param: str) -> APIError:
    """The tokenizer's refusal of characters outside its vocabulary, as a 400 naming `param`."""
    found = str(error).split("; the model", 1)[0].replace("text has", f"{param} has", 1)
    return APIError(400, found, param, "unknown_characters")


def check_vocabulary(ids: list[int], vocab_size: int, param: str) -> None:
    """Raises APIError 400 for a token id outside the vocabulary."""
    bad = next((i for i in ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise APIError(400, f"{param} has token id {bad}, outside this model's vocabulary "
                            f"(0 to {vocab_size - 1})", param, "unknown_token")


def check_ids(ids: list[int], vocab_size: int, limits: ServeConfig, param: str) -> list[int]:
    """A prompt given as token ids, checked like a text prompt: raises APIError 400 for no ids
    or an id outside the vocabulary, 413 for too many."""
    if not ids:
        raise APIError(400, f"{param} is an empty list of token ids; give at least one", param)
    check_vocabulary(ids, vocab_size, param)
    return check_length(ids, limits, param)
