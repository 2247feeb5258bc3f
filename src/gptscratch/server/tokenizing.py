"""The served model's tokenizer over HTTP: vLLM's `POST /tokenize`, `POST /detokenize` and
`GET /tokenizer_info` routes.

lm-evaluation-harness's `local-completions` model looks for these first (its "remote"
tokenizer): with them it scores a served model with no tokenizer of its own and no hub lookup,
whatever the model's tokenizer is (characters, GPT-2's, or one trained here). It then sends
token ids to `/v1/completions` with `echo` and `logprobs`, so its ids and ours agree.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from gptscratch.data.tokenizers import Tokenizer
from gptscratch.data.tokenizers.base import EOT
from gptscratch.errors import UserError
from gptscratch.server.completions import Served
from gptscratch.server.schemas import check_vocabulary, unknown_characters


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt: str
    model: str | None = None
    add_special_tokens: bool = True  # accepted for vLLM's clients; there is no BOS to add


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tokens: list[int]
    model: str | None = None


def encode_with_special(tokenizer: Tokenizer, text: str) -> list[int]:
    """The text's ids, `<|endoftext|>` read as the end-of-text id where the tokenizer has one
    (as Hugging Face tokenizers read special tokens, and as lm-eval finds the EOS id: the first
    id of the EOS token's text). An empty text is no ids.

    Raises:
        APIError: 400 for characters the tokenizer cannot encode.
    """
    parts = [text] if tokenizer.eot_id is None else text.split(EOT)
    ids: list[int] = []
    try:
        for i, part in enumerate(parts):
            if i and tokenizer.eot_id is not None:
                ids.append(tokenizer.eot_id)
            if part:
                ids += tokenizer.encode(part)
    except UserError as e:
        raise unknown_characters(e, "prompt") from None
    return ids


def add_tokenizer_routes(app: FastAPI, served: Served, auth: list[Any]) -> None:
    tokenizer = served.loaded.tokenizer
    context = served.loaded.model.config.block_size

    @app.post("/tokenize", dependencies=auth)
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        served.check_model(body.model)
        ids = encode_with_special(tokenizer, body.prompt)
        return {"tokens": ids, "count": len(ids), "max_model_len": context}

    @app.post("/detokenize", dependencies=auth)
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        served.check_model(body.model)
        check_vocabulary(body.tokens, tokenizer.vocab_size, "tokens")
        return {"prompt": tokenizer.decode(body.tokens)}

    @app.get("/tokenizer_info", dependencies=auth)
    async def tokenizer_info() -> dict[str, Any]:
        # lm-eval requires the "eos_token" key (null where the tokenizer has none).
        return {"tokenizer_class": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                "eos_token": EOT if tokenizer.eot_id is not None else None,
                "bos_token": None, "pad_token": None, "model_max_length": context}
