"""`gptscratch serve` through the official `openai` client: the routes, the response shapes
and every error, on the tiny char model, against `api.complete` as the oracle (the server must
write what the library writes for the same prompt, settings and seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import cli_error
from serving import client, openai, post, running

from gptscratch import api
from gptscratch.generation.script import corpus_script

PROMPT = "ROMEO:\nWhat"
LIMIT = 64


@pytest.fixture(scope="module")
def loaded(tiny_run: Path) -> Any:
    return api.load(tiny_run, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def url(loaded: Any) -> Any:
    app = api.server_app(loaded, max_batch=4, max_tokens_per_request=LIMIT,
                         max_prompt_tokens=200)
    with running(app) as served:
        yield served


def expected(loaded: Any, prompt: str = PROMPT, **options: Any) -> Any:
    """What the library generates: the oracle."""
    return api.complete(loaded, prompt, **options)[0]


def test_health_and_models_name_the_run(url: str) -> None:
    assert post(url, "/health", method="GET")[:1] == (200,)
    assert [m.id for m in client(url).models.list().data] == ["tiny"]


@pytest.mark.parametrize("settings", [dict(temperature=0.0), dict(temperature=0.9, seed=3),
                                      dict(temperature=1.0, seed=5, top_p=0.9,
                                           presence_penalty=0.5)])
def test_a_completion_is_what_the_library_writes(url: str, loaded: Any,
                                                 settings: dict[str, Any]) -> None:
    """40 tokens: the char model's 32-token window slides on the way."""
    out = client(url).completions.create(model="tiny", prompt=PROMPT, max_tokens=40, **settings)
    want = expected(loaded, max_new_tokens=40, **settings)
    assert out.choices[0].text == want.text
    assert out.choices[0].finish_reason == "length"
    assert out.object == "text_completion"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(PROMPT), 40)


def test_streaming_gives_the_same_text_in_pieces(url: str, loaded: Any) -> None:
    chunks = list(client(url).completions.create(model="tiny", prompt=PROMPT, max_tokens=30,
                                                 temperature=0.8, seed=11, stream=True))
    assert len(chunks) > 2
    assert "".join(c.choices[0].text for c in chunks) == expected(
        loaded, max_new_tokens=30, temperature=0.8, seed=11).text
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_a_stop_string_ends_the_text_and_is_never_sent(url: str, loaded: Any) -> None:
    greedy = expected(loaded, max_new_tokens=40, temperature=0.0).text
    stop = greedy[12:15]
    want = greedy[:greedy.find(stop)]
    c = client(url)
    out = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0,
                               stop=[stop, "zzz"])
    assert (out.choices[0].text, out.choices[0].finish_reason) == (want, "stop")
    streamed = list(c.completions.create(model="tiny", prompt=PROMPT, max_tokens=40,
                                         temperature=0, stop=stop, stream=True))
    assert "".join(s.choices[0].text for s in streamed) == want
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_n_choices_of_several_prompts_are_seeded_one_by_one(url: str, loaded: Any) -> None:
    prompts = [PROMPT, "JULIET:\n"]
    out = client(url).completions.create(model="tiny", prompt=prompts, max_tokens=12, n=2,
                                         temperature=1.0, seed=7)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    for c in out.choices:  # choice j of prompt i: seed 7 + j
        want = expected(loaded, prompts[c.index // 2], max_new_tokens=12, temperature=1.0,
                        seed=7 + c.index % 2)
        assert c.text == want.text
    assert out.usage.prompt_tokens == sum(map(len, prompts))
    assert out.usage.completion_tokens == 4 * 12


def test_logprobs_are_the_models_with_the_top_alternatives(url: str, loaded: Any) -> None:
    out = client(url).completions.create(model="tiny", prompt=PROMPT, max_tokens=10,
                                         temperature=0, logprobs=3)
    choice = out.choices[0]
    want = expected(loaded, max_new_tokens=10, temperature=0.0)
    assert choice.text == want.text
    lp = choice.logprobs
    assert "".join(lp.tokens) == want.text
    assert lp.token_logprobs == pytest.approx(want.logprobs, abs=1e-5)
    assert lp.text_offset[0] == 0
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 3
        best = max(top, key=top.get)  # greedy: the chosen token is the most likely one
        assert (best, top[best]) == (token, pytest.approx(logprob, abs=1e-6))


def prompt_logprobs(loaded: Any, ids: list[int]) -> list[float | None]:
    """The oracle for scoring a prompt: each token's log-probability given the tokens before
    it, from one plain forward per window (the first window whole, then windows whose ends
    move half a window at a time, each scoring its new tokens)."""
    import torch

    block, out = loaded.model.config.block_size, [None]
    ends = [min(len(ids), block)]
    while ends[-1] < len(ids):
        ends.append(min(len(ids), ends[-1] + block // 2))
    for k, end in enumerate(ends):
        begin = max(0, end - block)
        with torch.no_grad():
            logits = loaded.model(torch.tensor([ids[begin:end]]))[0]
        logprobs = torch.log_softmax(logits.float(), -1)
        out += [float(logprobs[i - 1 - begin, ids[i]])
                for i in range(1 if k == 0 else ends[k - 1], end)]
    return out


@pytest.mark.parametrize("prompt", [PROMPT, "ROMEO:\nWhat say you? " * 4])  # 88 > 32 tokens
def test_echo_with_logprobs_scores_the_prompt(url: str, loaded: Any, prompt: str) -> None:
    """OpenAI's echo + logprobs (how evaluation harnesses score text): the prompt's tokens
    come first, the first with no log-probability, then the generated ones; with
    max_tokens 0 only the prompt, scored."""
    ids = loaded.tokenizer.encode(prompt)
    c = client(url)
    out = c.completions.create(model="tiny", prompt=prompt, max_tokens=5, temperature=0,
                               logprobs=2, echo=True)
    want = expected(loaded, prompt, max_new_tokens=5, temperature=0.0)
    lp = out.choices[0].logprobs
    assert out.choices[0].text == prompt + want.text
    assert "".join(lp.tokens) == prompt + want.text
    assert lp.text_offset[:3] == [0, 1, 2] and lp.text_offset[len(ids)] == len(prompt)
    scores = prompt_logprobs(loaded, ids)
    assert lp.token_logprobs[0] is None
    assert lp.token_logprobs[1:len(ids)] == pytest.approx(scores[1:], abs=1e-5)
    assert lp.token_logprobs[len(ids):] == pytest.approx(want.logprobs, abs=1e-5)
    assert lp.top_logprobs[0] is None and all(len(top) == 2 for top in lp.top_logprobs[1:])
    only = c.completions.create(model="tiny", prompt=prompt, max_tokens=0, logprobs=0,
                                echo=True)
    assert (only.choices[0].text, only.choices[0].finish_reason) == (prompt, "length")
    assert only.choices[0].logprobs.token_logprobs[1:] == pytest.approx(scores[1:], abs=1e-5)
    chunks = list(c.completions.create(model="tiny", prompt=prompt, max_tokens=5,
                                       temperature=0, logprobs=2, echo=True, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == prompt + want.text
    assert chunks[0].choices[0].logprobs.tokens == list(lp.tokens[:len(ids)])


def test_a_prompt_of_token_ids_is_the_same_as_its_text(url: str, loaded: Any) -> None:
    ids = loaded.tokenizer.encode(PROMPT)
    c = client(url)
    want = expected(loaded, max_new_tokens=8, temperature=0.0)
    one = c.completions.create(model="tiny", prompt=ids, max_tokens=8, temperature=0,
                               echo=True)
    assert one.choices[0].text == PROMPT + want.text
    assert one.usage.prompt_tokens == len(ids)
    two = c.completions.create(model="tiny", prompt=[ids, ids[:3]], max_tokens=8,
                               temperature=0)
    assert two.choices[0].text == want.text and len(two.choices) == 2


def test_chat_streams_the_characters_next_speech(url: str, loaded: Any) -> None:
    from gptscratch.server.chat_template import render_chat
    from gptscratch.server.schemas import ChatMessage

    messages = [{"role": "system", "content": "A street in Verona."},
                {"role": "user", "content": "Good morrow, cousin.", "name": "BENVOLIO"},
                {"role": "assistant", "content": "Is the day so young?", "name": "ROMEO"},
                {"role": "user", "content": "But new struck nine.", "name": "BENVOLIO"}]
    prompt, speaker = render_chat([ChatMessage(**m) for m in messages],  # type: ignore[arg-type]
                                  corpus_script(loaded.checkpoint))
    assert speaker == "ROMEO" and prompt.endswith("But new struck nine.\n\nROMEO:\n")
    want = expected(loaded, prompt, max_new_tokens=60, temperature=0.0,
                    until_next_speaker=True)
    c = client(url)
    chunks = list(c.chat.completions.create(model="tiny", messages=messages,  # type: ignore
                                            max_tokens=60, temperature=0, stream=True))
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == want.text
    assert chunks[-1].choices[0].finish_reason == want.finish_reason
    whole = c.chat.completions.create(model="tiny", messages=messages,  # type: ignore
                                      max_tokens=60, temperature=0)
    assert whole.choices[0].message.content == want.text


def test_chat_choices_are_seeded_one_by_one_and_stream_by_index(url: str,
                                                                  loaded: Any) -> None:
    from gptscratch.server.chat_template import render_chat
    from gptscratch.server.schemas import ChatMessage

    messages = [{"role": "user", "content": "Good morrow, cousin.", "name": "BENVOLIO"}]
    prompt, _ = render_chat([ChatMessage(**m) for m in messages],  # type: ignore[arg-type]
                            corpus_script(loaded.checkpoint))
    wants = [expected(loaded, prompt, max_new_tokens=30, temperature=1.0, seed=3 + j,
                      until_next_speaker=True).text for j in range(3)]
    assert len(set(wants)) > 1  # the seeds give different speeches
    c = client(url)
    whole = c.chat.completions.create(model="tiny", messages=messages,  # type: ignore
                                      max_tokens=30, temperature=1.0, seed=3, n=3)
    assert [ch.message.content for ch in whole.choices] == wants
    texts = ["", "", ""]
    for chunk in c.chat.completions.create(model="tiny", messages=messages,  # type: ignore
                                           max_tokens=30, temperature=1.0, seed=3, n=3,
                                           stream=True):
        for ch in chunk.choices:
            texts[ch.index] += ch.delta.content or ""
    assert texts == wants


def error_of(url: str, body: Any, path: str = "/v1/completions",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    status, _, answer = post(url, path, body, headers)
    assert isinstance(answer, dict) and set(answer) == {"error"}, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in answer["error"]["message"]
    return status, answer["error"]


GOOD = {"model": "tiny", "prompt": "ROMEO:", "max_tokens": 4}


@pytest.mark.parametrize(("body", "status", "param", "says"), [
    (b'{"prompt": "ROMEO:", ', 400, None, "not valid JSON"),
    ({**GOOD, "temperature": "hot"}, 422, "temperature", "temperature"),
    ({**GOOD, "max_tokens": [1]}, 422, "max_tokens", "max_tokens"),
    ({"model": "tiny"}, 422, "prompt", "prompt"),
    ({**GOOD, "temperature": -0.5}, 400, "temperature", "temperature (-0.5) must be >= 0"),
    ({**GOOD, "top_p": 0}, 400, "top_p", "(0, 1]"),
    ({**GOOD, "top_p": 1.5}, 400, "top_p", "(0, 1]"),
    ({**GOOD, "max_tokens": LIMIT + 1}, 400, "max_tokens", f"allows per request ({LIMIT})"),
    ({**GOOD, "prompt": "ROMEO: " * 40}, 413, "prompt", "at most 200"),
    ({**GOOD, "prompt": "ROMEO: ☃ é"}, 400, "prompt", "'☃', 'é'"),
    ({**GOOD, "stop": [""]}, 400, "stop", "empty"),
    ({**GOOD, "model": "gpt-4"}, 404, "model", "'gpt-4' does not exist"),
    ({**GOOD, "prompt": [5, 99999]}, 400, "prompt", "token id 99999, outside"),
    ({**GOOD, "prompt": [[]]}, 400, "prompt", "empty list of token ids"),
    ({**GOOD, "prompt": [1] * 201}, 413, "prompt", "at most 200"),
    ({**GOOD, "prompt": [1, "a"]}, 422, "prompt", "prompt"),
])
def test_bad_requests_get_openai_shaped_errors(url: str, body: Any, status: int,
                                               param: str | None, says: str) -> None:
    got, error = error_of(url, body)
    assert (got, error["param"]) == (status, param), error
    assert says in error["message"]
    assert client(url).completions.create(**GOOD).choices[0].finish_reason  # still serving


def test_the_openai_client_raises_its_own_errors(url: str) -> None:
    c = client(url)
    with pytest.raises(openai.BadRequestError, match="top_p"):
        c.completions.create(model="tiny", prompt="ROMEO:", top_p=2.0)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])


def test_unknown_routes_and_no_cors(url: str) -> None:
    status, error = error_of(url, GOOD, path="/v1/embeddings")
    assert status == 404 and "/v1/embeddings" in error["message"]
    _, headers, _ = post(url, "/v1/models", None, {"Origin": "http://evil.example"},
                         method="GET")
    assert not any(h.lower().startswith("access-control") for h in headers)


def test_an_api_key_is_required_when_set(loaded: Any) -> None:
    with running(api.server_app(loaded, api_key="sesame")) as url:
        status, error = error_of(url, GOOD)
        assert status == 401 and error["code"] == "invalid_api_key"
        assert error_of(url, GOOD, headers={"Authorization": "Bearer nope"})[0] == 401
        with pytest.raises(openai.AuthenticationError):
            client(url, api_key="wrong").models.list()
        assert client(url, api_key="sesame").completions.create(**GOOD).choices
        assert post(url, "/health", method="GET")[0] == 200  # no key needed


def test_a_full_queue_is_a_429(loaded: Any) -> None:
    with running(api.server_app(loaded, max_batch=1, max_queue=2)) as url:
        status, error = error_of(url, {**GOOD, "n": 3})
        assert status == 429 and error["type"] == "rate_limit_error"
        with pytest.raises(openai.RateLimitError):
            client(url).completions.create(**GOOD, n=3)
        assert len(client(url).completions.create(**GOOD, n=2).choices) == 2


def test_serve_without_the_extra_names_the_pip_command(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tiny_run: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fastapi" else real(name, *a))
    line = cli_error(["serve", "--ckpt", str(tiny_run)], capsys)
    assert 'pip install -c constraints.txt -e ".[serve]"' in line
    line = cli_error(["serve", "--ckpt", str(tiny_run), "--max-batch", "0"], capsys)
    assert "max_batch (0) must be >= 1" in line


def test_a_stopped_engine_is_a_503_and_the_server_says_so(loaded: Any) -> None:
    app = api.server_app(loaded)
    with running(app) as url:
        app.state.served.engine.stop()
        assert post(url, "/health", method="GET")[0] == 503
        status, error = error_of(url, GOOD)
        assert status == 503 and error["code"] == "engine_stopped"


@pytest.mark.parametrize(("host", "browser"), [("127.0.0.1", "127.0.0.1"),
                                               ("0.0.0.0", "127.0.0.1"), ("10.1.2.3", "10.1.2.3")])
def test_serve_prints_the_playground_address(
        tiny_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        host: str, browser: str) -> None:
    """`gptscratch serve` says where the API and the playground are (a server listening on
    every interface is opened in a browser through the loopback)."""
    import uvicorn

    from gptscratch.cli import main

    served: list[tuple[str, int]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: served.append((host, port)))
    assert main(["serve", "--ckpt", str(tiny_run), "--host", host, "--port", "8123"]) == 0
    err = capsys.readouterr().err
    assert served == [(host, 8123)]
    assert f"serving on http://{host}:8123/v1" in err
    assert f"playground: open http://{browser}:8123/ in a browser" in err


def test_the_tokenizer_routes_speak_vllms_shape(url: str, loaded: Any) -> None:
    """lm-evaluation-harness's remote tokenizer: /tokenizer_info with an eos_token key, then
    /tokenize and /detokenize (vLLM's shapes), so it needs no tokenizer of its own."""
    status, _, info = post(url, "/tokenizer_info", method="GET")
    assert status == 200 and "eos_token" in info
    assert info["model_max_length"] == loaded.model.config.block_size
    assert info["tokenizer_class"] == "char" and info["vocab_size"] == loaded.tokenizer.vocab_size
    status, _, body = post(url, "/tokenize", {"prompt": PROMPT, "add_special_tokens": False})
    assert status == 200
    assert body == {"tokens": loaded.tokenizer.encode(PROMPT), "count": len(PROMPT),
                    "max_model_len": loaded.model.config.block_size}
    assert post(url, "/detokenize", {"tokens": body["tokens"]})[2] == {"prompt": PROMPT}
    assert post(url, "/tokenize", {"prompt": ""})[2]["tokens"] == []


def test_the_tokenizer_routes_refuse_what_they_cannot_do(url: str, loaded: Any) -> None:
    status, _, body = post(url, "/tokenize", {"prompt": "ROMEO \u00e9\u00e9"})
    assert status == 400 and body["error"]["param"] == "prompt"
    assert "outside the char vocabulary: '\u00e9'" in body["error"]["message"]
    V = loaded.tokenizer.vocab_size
    status, _, body = post(url, "/detokenize", {"tokens": [0, V]})
    assert status == 400 and f"token id {V}, outside this model's vocabulary" in \
        body["error"]["message"]
    assert post(url, "/tokenize", {"prompt": "a", "model": "other"})[0] == 404
    assert post(url, "/tokenize", {"text": "a"})[0] in (400, 422)


def test_the_end_of_text_marker_is_read_as_its_id() -> None:
    """lm-eval finds the EOS id as the first id of /tokenize(eos_token)."""
    import torch

    from gptscratch.checkpoints.load import LoadedModel
    from gptscratch.data.tokenizers import EOT, GPT2Tokenizer
    from gptscratch.model.config import ModelConfig
    from gptscratch.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50257, block_size=64, n_layer=1, n_head=2, n_embd=16))
    tokenizer = GPT2Tokenizer()
    with running(api.server_app(LoadedModel(model.eval(), tokenizer))) as gpt2_url:
        info = post(gpt2_url, "/tokenizer_info", method="GET")[2]
        assert info["eos_token"] == EOT and info["tokenizer_class"] == "gpt2"
        tokens = post(gpt2_url, "/tokenize", {"prompt": info["eos_token"]})[2]["tokens"]
        assert tokens == [50256]
        text = f"Hello{EOT} world"
        both = post(gpt2_url, "/tokenize", {"prompt": text})[2]["tokens"]
        assert both == tokenizer.encode("Hello") + [50256] + tokenizer.encode(" world")
        assert post(gpt2_url, "/detokenize", {"tokens": both})[2]["prompt"] == text
