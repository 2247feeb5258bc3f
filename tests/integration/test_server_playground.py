"""The playground behind `gptscratch serve`: its page at `/`, its per-token stream (against
`api.complete`'s token ids and log-probabilities) and its attention weights (against the
model's explicit attention path). The browser test of the page itself is still to come."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from serving import post, running

from gptscratch import api
from gptscratch.model.gpt import Trace


@pytest.fixture(scope="module")
def loaded(tiny_run: Path) -> Any:
    return api.load(tiny_run, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def url(loaded: Any) -> Any:
    with running(api.server_app(loaded)) as served:
        yield served


def test_the_page_is_self_contained(url: str) -> None:
    status, headers, page = post(url, "/", method="GET")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "gptscratch playground" in page and "/playground/generate" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no CDN


def events(body: str) -> list[dict[str, Any]]:
    lines = [line[6:] for line in body.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_each_token_comes_with_its_probability_and_alternatives(url: str,
                                                                loaded: Any) -> None:
    prompt = "MENENIUS:\nWhy"
    status, _, body = post(url, "/playground/generate", {
        "prompt": prompt, "max_tokens": 20, "temperature": 0.9, "seed": 4, "top": 3})
    assert status == 200
    got = events(body)
    want = api.complete(loaded, prompt, max_new_tokens=20, temperature=0.9, seed=4)[0]
    assert got[0]["prompt_ids"] == loaded.tokenizer.encode(prompt)
    tokens, last = got[1:-1], got[-1]
    assert [t["id"] for t in tokens] == want.token_ids
    assert [t["prob"] for t in tokens] == pytest.approx([math.exp(lp) for lp in want.logprobs],
                                                        abs=1e-5)
    for t in tokens:
        probs = [a["prob"] for a in t["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert t["prob"] <= probs[0] + 1e-6
    assert last == {"finish_reason": "length", "error": None}


def test_attention_is_the_last_layers_weights(url: str, loaded: Any) -> None:
    ids = loaded.tokenizer.encode("ROMEO:\nWhat say")
    status, _, got = post(url, "/playground/attention", {"ids": ids, "position": 5})
    assert status == 200 and got["position"] == 5 and len(got["tokens"]) == 6
    with torch.no_grad():
        trace = Trace()
        loaded.model(torch.tensor([ids]), trace=trace)
        maps = [b["weights"] for b in trace.blocks]
    torch.testing.assert_close(torch.tensor(got["heads"]), maps[-1][0, :, 5, :6], atol=1e-6,
                               rtol=0)
    assert [sum(h) for h in got["heads"]] == pytest.approx([1.0] * len(got["heads"]))
    block = loaded.model.config.block_size
    long = ids * (block // len(ids) + 2)
    status, _, got = post(url, "/playground/attention", {"ids": long})
    assert status == 200 and got["position"] == len(long) - 1
    assert len(got["tokens"]) == block  # the model reads the last block_size tokens
    assert post(url, "/playground/attention", {"ids": ids, "position": 99})[0] == 400
    assert post(url, "/playground/attention", {"ids": [10**6]})[0] == 400
