"""Chat fine-tuning end to end: conversations prepared with the chat template, `train --sft`
from a trained run, answers that stop at the end-of-turn marker in `chat`, `complete` and the
server (the real `openai` client), exact resume, and the refusals; the same with the text
chat template (`--chat-template text`), through `export-hf` and `import-hf` too."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import CHAT_TRAIN, QUESTIONS, SHORT, cli_error, write_conversations

from gptscratch import api
from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.checkpoints.load import add_token_rows, load_model
from gptscratch.data.tokenizers import chat_template_of
from gptscratch.data.tokenizers.chat_template import MARKERS, TEXT_TEMPLATE
from gptscratch.errors import SettingError, UserError
from gptscratch.training.metrics import read_metrics

# Questions short enough for a text-template conversation to fit the tiny model's 33 ids:
# "User:\n" q "\n\n\n" "Assistant:\n" "yes" "\n\n\n" is 26 + len(q) characters.
SHORTEST = ["who", "go", "why so", "say", "come", "what", "is it", "how"]


@pytest.fixture(scope="module")
def text_chat_run(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> Path:
    """`tiny_run` fine-tuned with `train --sft --chat-template text` to answer "yes"."""
    from gptscratch.cli import main

    folder = tmp_path_factory.mktemp("sft-text")
    data = write_conversations(folder / "chat.jsonl", questions=SHORTEST)
    flags = [a for k, v in CHAT_TRAIN.items() if v is not None
             for a in (f"--{k.replace('_', '-')}", str(v))]
    assert main(["train", "--sft", "--init-from", str(tiny_run), "--data", str(data), "--out",
                 str(folder / "run"), "--chat-template", "text", "--sample-tokens", "0",
                 *flags]) == 0
    return folder / "run"


def test_an_sft_run_adds_the_markers_and_answers_until_its_end_marker(chat_run: Path,
                                                                     tiny_run: Path) -> None:
    base, tuned = api.load(tiny_run), api.load(chat_run)
    template = chat_template_of(tuned.tokenizer)
    assert template is not None and chat_template_of(base.tokenizer) is None
    assert tuned.model.config.vocab_size == base.model.config.vocab_size + 4
    assert load_checkpoint(chat_run).meta["sft"] is True
    session = api.chat_session(chat_run, temperature=0.0, max_new_tokens=20)
    assert "".join(session.reply("is it so")) == "yes"
    assert "".join(session.reply("why so")) == "yes"  # the second turn, in context
    assert [m.role for m in session.messages] == ["user", "assistant"] * 2
    # A raw prompt to a template model stops at the marker as well.
    prompt = template.prompt_ids(tuned.tokenizer, [api.Message("user", "shall we go")])
    done = api.complete(tuned, "shall we go", temperature=0.0, max_new_tokens=20,
                        prompt_ids=[prompt])[0]
    assert (done.text, done.finish_reason) == ("yes", "stop")
    assert done.token_ids[-1] == template.end_id


def test_sft_from_a_hugging_face_gpt2_folder(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`train --sft --init-from` a transformers GPT-2 folder: the markers are ids 50,257 to
    50,260 after GPT-2's vocabulary, their embeddings start as the mean of the folder's rows
    (seen exactly in a run whose embeddings are frozen), and the tuned model answers until
    its end marker in `complete` and `chat`."""
    from hf_models import GPT2_VOCAB, make_hf_model

    from gptscratch.cli import main

    folder = tmp_path / "hf"
    hf = make_hf_model(folder, vocab_size=GPT2_VOCAB, n_embd=16, n_head=2, n_layer=2,
                       n_positions=32)
    data = write_conversations(tmp_path / "chat.jsonl")
    over = {**CHAT_TRAIN, "block_size": 16, "max_iters": 60, "eval_interval": 60}
    frozen = tmp_path / "frozen"
    api.train(init_from=str(folder), data=data, out_dir=frozen, sft=True,
              overrides={**over, "max_iters": 1, "freeze_embeddings": True})
    table = hf.transformer.wte.weight.detach()
    start = load_model(load_checkpoint(frozen)).model.transformer.wte.weight
    assert start.shape == (GPT2_VOCAB + len(MARKERS), 16)
    assert torch.equal(start[:GPT2_VOCAB], table)
    assert torch.equal(start[GPT2_VOCAB:], table.mean(0).expand(len(MARKERS), -1))
    run = tmp_path / "run"
    flags = [a for k, v in over.items() if v is not None
             for a in (f"--{k.replace('_', '-')}", str(v))]
    assert main(["train", "--sft", "--init-from", str(folder), "--data", str(data), "--out",
                 str(run), "--sample-tokens", "0", *flags]) == 0, capsys.readouterr().err
    tuned = api.load(run)
    template = chat_template_of(tuned.tokenizer)
    assert template is not None and tuned.tokenizer.kind == "gpt2"
    assert tuned.model.config.vocab_size == tuned.tokenizer.vocab_size == GPT2_VOCAB + 4
    assert [template.opening_ids(tuned.tokenizer, r) for r in ("system", "user", "assistant")
            ] == [[GPT2_VOCAB], [GPT2_VOCAB + 1], [GPT2_VOCAB + 2]]
    assert template.end_id == GPT2_VOCAB + 3
    assert tuned.tokenizer.decode(list(range(GPT2_VOCAB, GPT2_VOCAB + 4))) == "".join(MARKERS)
    prompt = template.prompt_ids(tuned.tokenizer, [api.Message("user", "is he dead")])
    done = api.complete(tuned, "is he dead", temperature=0.0, max_new_tokens=10,
                        prompt_ids=[prompt])[0]
    assert (done.text, done.finish_reason, done.token_ids[-1]) == ("yes", "stop",
                                                                   template.end_id)
    session = api.chat_session(run, temperature=0.0, max_new_tokens=10)
    assert "".join(session.reply("who is there")) == "yes"


def test_a_text_template_run_adds_no_ids_and_answers_until_its_end_text(
        text_chat_run: Path, tiny_run: Path) -> None:
    base, tuned = api.load(tiny_run), api.load(text_chat_run)
    template = chat_template_of(tuned.tokenizer)
    assert template is not None and template.style == "text"
    assert tuned.model.config.vocab_size == base.model.config.vocab_size  # no new ids
    assert load_checkpoint(text_chat_run).meta["train_config"]["chat_template"] == "text"
    session = api.chat_session(text_chat_run, temperature=0.0, max_new_tokens=20)
    assert "".join(session.reply("who")) == "yes"  # the end text is not shown
    prompt = template.prompt_ids(tuned.tokenizer, [api.Message("user", "go")])
    done = api.complete(tuned, "go", temperature=0.0, max_new_tokens=20,
                        prompt_ids=[prompt])[0]
    assert (done.text, done.finish_reason) == ("yes", "stop")
    assert tuned.tokenizer.decode(done.token_ids) == "yes\n\n\n"
    # The turns are text: the same prompt typed as text is the same question.
    typed = api.complete(tuned, "User:\nsay\n\n\nAssistant:\n", temperature=0.0,
                         max_new_tokens=20)[0]
    assert (typed.text, typed.finish_reason) == ("yes", "stop")


def test_the_server_answers_through_the_text_template(text_chat_run: Path) -> None:
    serving = pytest.importorskip("serving")
    loaded = api.load(text_chat_run, device="cpu", dtype="float32")
    with serving.running(api.server_app(loaded, max_batch=2)) as url:
        reply = serving.client(url).chat.completions.create(
            model="run", temperature=0, max_tokens=20,
            messages=[{"role": "user", "content": "what"}])
        assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == (
            "yes", "stop")


def test_a_model_or_data_keeps_its_chat_template(tmp_path: Path, tiny_run: Path,
                                                 text_chat_run: Path) -> None:
    data = write_conversations(tmp_path / "chat.jsonl", n=20, questions=SHORTEST)
    over = {**CHAT_TRAIN, "max_iters": 2}
    with pytest.raises(SettingError) as error:
        api.train(init_from=text_chat_run, data=data, out_dir=tmp_path / "a", sft=True,
                  overrides={**over, "chat_template": "tokens"})
    assert str(error.value).startswith("chat_template ('tokens') differs from the text chat "
                                       "template of this model or data, which it keeps")
    assert not (tmp_path / "a").exists()
    api.train(init_from=text_chat_run, data=data, out_dir=tmp_path / "b", sft=True,
              overrides=over)  # not asked: the model's own
    again = chat_template_of(api.load(tmp_path / "b").tokenizer)
    assert again is not None and again.style == "text"
    prepared = api.prepare_chat(str(data), load_checkpoint(tiny_run).tokenizer(),
                                tmp_path / "p", chat_template="text")
    with pytest.raises(UserError, match="prepared with the text chat template, not tokens; "
                                        "give --chat-template text"):
        api.train(init_from=tiny_run, data=prepared.dir, out_dir=tmp_path / "c", sft=True,
                  overrides=over)
    assert not (tmp_path / "c").exists()


def test_a_text_template_model_exports_and_imports(tmp_path: Path, text_chat_run: Path) -> None:
    """The exported tokenizer has the text template as Jinja and no added markers; transformers
    renders and encodes a prompt as `prompt_ids` does; `import-hf` restores the template."""
    transformers = pytest.importorskip("transformers")
    exported = api.export_hf(text_chat_run, tmp_path / "hf")
    added = json.loads((exported / "tokenizer.json").read_text())["added_tokens"] or []
    assert not {a["content"] for a in added} & set(MARKERS)
    hf_tok = transformers.AutoTokenizer.from_pretrained(exported)
    ours = api.load(text_chat_run)
    template = chat_template_of(ours.tokenizer)
    assert template is not None and hf_tok.chat_template == TEXT_TEMPLATE.jinja()
    text = hf_tok.apply_chat_template([{"role": "user", "content": "who"}],
                                      add_generation_prompt=True, tokenize=False)
    assert text == "User:\nwho\n\n\nAssistant:\n"
    expected = template.prompt_ids(ours.tokenizer, [api.Message("user", "who")])
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == expected
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    with torch.no_grad():
        ids = torch.tensor([expected])
        assert torch.allclose(hf_model(ids).logits, ours.model(ids), atol=1e-4)
    back = api.load(api.import_hf(str(exported), tmp_path / "back"))
    assert back.tokenizer.fingerprint() == ours.tokenizer.fingerprint()


@pytest.mark.parametrize("style", ["tokens", "text"])
def test_an_sft_runs_samples_answer_a_question_up_to_the_end_of_turn(
        style: str, request: pytest.FixtureRequest) -> None:
    """The sample each evaluation logs: the first validation question in the template's layout,
    then the answer, which ends at the end of turn (what follows it is not generated)."""
    run = request.getfixturevalue("chat_run" if style == "tokens" else "text_chat_run")
    tokenizer = load_checkpoint(run).tokenizer()
    template = chat_template_of(tokenizer)
    assert template is not None and template.style == style
    samples = [r["sample"] for r in read_metrics(run / "metrics.jsonl") if "sample" in r]
    assert samples
    question = template.prompt_ids(tokenizer, [api.Message("user", "who")])
    opening, closing = tokenizer.decode(question).split("who")
    asked, answer = samples[-1].split(closing)  # one question, one answer
    assert asked.startswith(opening) and asked[len(opening):] in QUESTIONS + SHORT + SHORTEST
    assert answer == "yes" + template.end  # trained to answer "yes"; ends at its end


def test_the_new_rows_start_as_the_mean_of_the_old() -> None:
    table = torch.arange(12.0).reshape(4, 3)
    grown = add_token_rows({"transformer.wte.weight": table, "x": table}, 6)
    assert torch.equal(grown["transformer.wte.weight"][:4], table)
    assert torch.equal(grown["transformer.wte.weight"][4:], table.mean(0).expand(2, 3))
    assert grown["x"] is table


def test_the_server_answers_through_the_template(chat_run: Path) -> None:
    serving = pytest.importorskip("serving")
    loaded = api.load(chat_run, device="cpu", dtype="float32")
    with serving.running(api.server_app(loaded, max_batch=2)) as url:
        openai_client = serving.client(url)
        reply = openai_client.chat.completions.create(
            model="run", temperature=0, max_tokens=20,
            messages=[{"role": "user", "content": "art thou well"}])
        choice = reply.choices[0]
        assert (choice.message.content, choice.finish_reason) == ("yes", "stop")
        # A system message (unseen in training) goes through the template as the library's.
        messages = [api.Message("system", "be brief"), api.Message("user", "is he dead")]
        template = chat_template_of(loaded.tokenizer)
        assert template is not None
        expected = api.complete(loaded, "", temperature=0.0, max_new_tokens=20, prompt_ids=[
            template.prompt_ids(loaded.tokenizer, messages)])[0]
        reply = openai_client.chat.completions.create(
            model="run", temperature=0, max_tokens=20,
            messages=[{"role": m.role, "content": m.content} for m in messages])
        assert reply.choices[0].message.content == expected.text
        assert reply.choices[0].finish_reason == expected.finish_reason
        stream = openai_client.chat.completions.create(
            model="run", temperature=0, max_tokens=20, stream=True,
            messages=[{"role": "user", "content": "may i speak"}])
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "yes"


def test_an_sft_run_resumes_exactly(tmp_path: Path, tiny_run: Path) -> None:
    data = write_conversations(tmp_path / "chat.jsonl")
    over = {**CHAT_TRAIN, "max_iters": 8, "log_interval": 1, "eval_interval": 100, "dropout": 0.1}
    straight, split = tmp_path / "straight", tmp_path / "split"
    api.train(init_from=tiny_run, data=data, out_dir=straight, overrides=over, sft=True)
    api.train(init_from=tiny_run, data=data, out_dir=split, overrides=over, sft=True, stop_at=4)
    api.train(out_dir=split, resume=True)

    def losses(run: Path) -> list[Any]:
        return [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl") if "loss" in r]

    assert losses(straight) == losses(split) and len(losses(split)) == 8
    a = load_model(load_checkpoint(straight)).model.state_dict()
    b = load_model(load_checkpoint(split)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(split).meta["sft"] is True


def test_prepare_chat_writes_masks_and_lengths(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from gptscratch.cli import main

    data = write_conversations(tmp_path / "chat.jsonl", n=30)
    assert main(["prepare", "--chat", "--data", str(data), "--out", str(tmp_path / "p")]) == 0
    prepared = api.load_prepared(tmp_path / "p", verify=True)
    assert prepared.is_chat and chat_template_of(prepared.tokenizer) is not None
    meta = prepared.meta
    assert meta["train_documents"] + meta["val_documents"] == 30
    lengths = prepared.chat_part("train", "lengths")
    assert int(sum(int(n) for n in lengths)) == meta["train_tokens"]
    answers = sum(1 + (i % 3 == 2) for i in range(30))  # "yes" and its end marker each
    assert meta["train_targets"] + meta["val_targets"] == 4 * answers


def test_long_conversations_are_dropped_or_refused(tmp_path: Path, tiny_run: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    data = write_conversations(tmp_path / "chat.jsonl", n=40)
    with data.open("a", encoding="utf-8") as f:
        long = {"messages": [{"role": "user", "content": "so " * 40},
                             {"role": "assistant", "content": "yes"}]}
        f.write(json.dumps(long) + "\n")
    over = {**CHAT_TRAIN, "max_iters": 2}
    with pytest.raises(UserError, match="longer than the context of 33 ids"):
        api.train(init_from=tiny_run, data=data, out_dir=tmp_path / "strict", sft=True,
                  overrides={**over, "strict": True})
    with caplog.at_level(logging.WARNING, logger="gptscratch.train"):
        api.train(init_from=tiny_run, data=data, out_dir=tmp_path / "run", sft=True,
                  overrides=over)
    assert "1 of the" in caplog.text and "left out" in caplog.text


@pytest.mark.parametrize("args,expected", [
    (["train", "--init-from", "{run}", "--data", "{chat}", "--out", "{tmp}/a"],
     "holds conversations; to teach a model to answer, add --sft"),
    (["train", "--sft", "--init-from", "{run}", "--data", "{run}/data", "--out", "{tmp}/b"],
     "holds prepared text, not conversations"),
    (["train", "--sft", "--init-from", "{run}", "--data", "{bad}", "--out", "{tmp}/c"],
     "bad.jsonl:2: no assistant turn"),
    (["chat", "--ckpt", "{run}", "--system", "be brief"],
     "a system message needs a model with a chat template"),
    (["train", "--sft", "--init-from", "{chat_run}", "--chat-template", "text", "--out",
      "{tmp}/d"], "chat_template ('text') differs from the tokens chat template of this model "
                  "or data, which it keeps; try --chat-template tokens"),
    (["prepare", "--data", "{chat}", "--chat-template", "text", "--out", "{tmp}/e"],
     "--chat-template lays out conversations; add --chat"),
])
def test_sft_mistakes_get_one_line(args: list[str], expected: str, tmp_path: Path,
                                   tiny_run: Path, chat_run: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    chat = write_conversations(tmp_path / "chat.jsonl", n=4)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(chat.read_text().splitlines()[0] + "\n"
                   + json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    names = {"run": tiny_run, "chat": chat, "tmp": tmp_path, "bad": bad, "chat_run": chat_run}
    message = cli_error([a.format(**names) for a in args], capsys)
    assert expected in message
    assert not any((tmp_path / name).exists() for name in "abcde")


def test_lora_sft_trains_the_new_rows_then_merges_and_exports(tmp_path: Path,
                                                              tiny_run: Path) -> None:
    transformers = pytest.importorskip("transformers")
    data = write_conversations(tmp_path / "chat.jsonl")
    run = tmp_path / "lora"
    api.train(init_from=tiny_run, data=data, out_dir=run, sft=True,
              overrides={**CHAT_TRAIN, "max_iters": 20, "lora_rank": 4})
    saved = load_checkpoint(run).weights()
    assert "transformer.wte.new_rows" in saved and saved["transformer.wte.new_rows"].shape[0] == 4
    assert all(n.endswith((".lora_A", ".lora_B", ".new_rows")) for n in saved)
    base, tuned = load_model(load_checkpoint(tiny_run)).model, api.load(run).model
    first = base.config.vocab_size
    table = tuned.transformer.wte.weight
    assert torch.equal(table[:first], base.transformer.wte.weight)  # the base's rows stay
    start = base.transformer.wte.weight.mean(0)
    assert all(not torch.allclose(row, start) for row in table[first:])  # the markers trained
    merged = api.merge_lora(run, tmp_path / "merged")
    exported = api.export_hf(merged, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(exported)
    ours = api.load(merged)
    template = chat_template_of(ours.tokenizer)
    assert template is not None
    messages = [api.Message("user", "is it so")]
    expected = template.prompt_ids(ours.tokenizer, messages)
    text = hf_tok.apply_chat_template([{"role": "user", "content": "is it so"}],
                                      add_generation_prompt=True, tokenize=False)
    assert text == "<|user|>is it so<|end|><|assistant|>"
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == expected
    assert hf_tok.eos_token_id == template.end_id and hf_tok.eos_token_id == template.end_id
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    with torch.no_grad():
        ids = torch.tensor([expected])
        assert torch.allclose(hf_model(ids).logits, tuned(ids), atol=1e-4)
    back = api.load(api.import_hf(str(exported), tmp_path / "back"))
    assert back.tokenizer.fingerprint() == ours.tokenizer.fingerprint()


def test_a_generative_task_asks_a_chat_model_through_its_template(chat_run: Path,
                                                                  tmp_path: Path) -> None:
    """`eval --task` with question / answer items: a chat model gets each bare question as a
    user message and answers up to its end marker (right on every one), where a base model
    continues `Question: ...\\nAnswer:` text."""
    task = tmp_path / "questions.jsonl"
    task.write_text("".join(json.dumps({"question": q, "answer": "yes"}) + "\n"
                            for q in ("is it so", "who is there", "are you mad")))
    chat = api.evaluate_tasks(chat_run, [task], device="cpu")
    assert chat.tasks[0].accuracy == 1.0
