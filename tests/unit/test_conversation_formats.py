"""Conversation data for fine-tuning: the three formats, every bad row's message, skipping bad
rows, telling conversation files from text files, and a local Hugging Face dataset."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import pytest

from gptscratch.data.conversations import (
    BadRows,
    Message,
    conversation_problem,
    dataset_conversations,
    detect_format,
    is_conversation_file,
    read_conversation_file,
    read_conversations,
    to_conversation,
)
from gptscratch.errors import UserError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "conversations"
SKIP_HINT = "; fix the row or pass --skip-bad-rows to skip such rows"


def _roles_and_texts(path: Path) -> list[list[tuple[str, str]]]:
    return [[(m.role, m.content) for m in c.messages] for c in read_conversation_file(path)]


def test_openai_messages_with_system_and_content_parts() -> None:
    path = FIXTURES / "openai.jsonl"
    conversations = list(read_conversation_file(path))
    assert [c.where for c in conversations] == [f"{path}:1", f"{path}:3", f"{path}:4"]
    assert _roles_and_texts(path) == [
        [("system", "You are a terse assistant."), ("user", "What is 2 + 2?"),
         ("assistant", "4")],
        [("user", "Name a colour of the sky."), ("assistant", " Blue.\n")],  # kept as given
        [("user", "Hi"), ("assistant", "Hello."), ("user", "Bye"), ("assistant", "Goodbye.")],
    ]


def test_alpaca_array_with_and_without_input_and_with_system() -> None:
    path = FIXTURES / "alpaca.json"
    conversations = list(read_conversation_file(path))
    assert [c.where for c in conversations] == [f"{path}:record {n}" for n in (1, 2, 3)]
    assert _roles_and_texts(path) == [
        [("user", "Translate to French.\n\nGood morning"), ("assistant", "Bonjour")],
        [("user", "Name a prime number."), ("assistant", "7")],
        [("system", "Answer in one word."), ("user", "What colour is grass?"),
         ("assistant", "Green")],
    ]


def test_alpaca_lines_with_and_without_an_input_field() -> None:
    assert _roles_and_texts(FIXTURES / "alpaca.jsonl") == [
        [("user", "Add the numbers.\n\n3 and 4"), ("assistant", "7")],
        [("user", "Say hello."), ("assistant", "Hello!")],
    ]


def test_sharegpt_speakers_become_roles() -> None:
    assert _roles_and_texts(FIXTURES / "sharegpt.jsonl") == [
        [("system", "Be kind."), ("user", "How are you?"), ("assistant", "Well, thank you.")],
        [("user", "Ping"), ("assistant", "Pong"), ("user", "Again"), ("assistant", "Pong")],
    ]


def test_gzip_files_are_read(tmp_path: Path) -> None:
    for name in ("openai.jsonl", "alpaca.json"):
        packed = tmp_path / f"{name}.gz"
        packed.write_bytes(gzip.compress((FIXTURES / name).read_bytes()))
        assert _roles_and_texts(packed) == _roles_and_texts(FIXTURES / name)
        assert is_conversation_file(packed)


@pytest.mark.parametrize(("case", "phrase"), [
    ("out_of_order", "roles out of order: an assistant message follows an assistant message "
                     "(message 3)"),
    ("empty_content", "message 2 (assistant) is empty"),
    ("no_assistant", "no assistant turn"),
    ("unknown_role", "unknown role 'bot' in message 2; roles are system, user, assistant"),
    ("not_json", "not valid JSON ("),
    ("mixed_formats", "mixed formats: ShareGPT 'conversations' record where OpenAI 'messages' "
                      "records were expected"),
    ("content_type", "message 2 (assistant) 'content' is a number, not text"),
])
def test_each_bad_row_names_its_line_and_problem(case: str, phrase: str) -> None:
    path = FIXTURES / "bad" / f"{case}.jsonl"
    conversations = read_conversation_file(path)
    assert next(conversations).where == f"{path}:1"  # the good row before it still comes
    with pytest.raises(UserError) as info:
        next(conversations)
    message = str(info.value)
    assert message.startswith(f"{path}:2: {phrase}")
    assert message.endswith(SKIP_HINT) and "\n" not in message


def test_a_bad_array_record_is_named_by_its_number() -> None:
    path = FIXTURES / "bad_alpaca.json"
    with pytest.raises(UserError, match=r"bad_alpaca\.json:record 2: 'output' is empty; fix"):
        list(read_conversation_file(path))


def test_skip_bad_rows_counts_them_and_keeps_the_good_ones() -> None:
    path = FIXTURES / "bad_rows.jsonl"
    bad = BadRows()
    conversations = list(read_conversation_file(path, skip_bad_rows=True, bad=bad))
    assert [c.where for c in conversations] == [f"{path}:1", f"{path}:9"]
    assert bad.count == 7
    assert bad.first == (f"{path}:2: roles out of order: an assistant message follows an "
                         "assistant message (message 3); user and assistant must alternate")


def test_read_conversations_chains_files_and_fills_bad_rows_as_it_runs() -> None:
    paths = [FIXTURES / "bad_rows.jsonl", FIXTURES / "bad" / "no_assistant.jsonl"]
    conversations, bad = read_conversations(paths, skip_bad_rows=True)
    assert bad.count == 0  # nothing read yet
    assert len(list(conversations)) == 3
    assert bad.count == 8


def test_a_message_holding_the_text_templates_end_is_a_bad_row(tmp_path: Path) -> None:
    """Two blank lines end a turn in the text chat template: `prepare_chat` refuses a message
    that holds them with its line, as the reader's bad rows, or skips and counts it."""
    from gptscratch.data.prepare_chat import prepare_chat

    def row(answer: str) -> str:
        return json.dumps({"messages": [{"role": "user", "content": "Who?"},
                                        {"role": "assistant", "content": answer}]}) + "\n"

    path = tmp_path / "chat.jsonl"
    path.write_text("".join(row("Me.\n\n\nAnd you?" if i == 2 else "Me.\n\nMe.")
                            for i in range(20)))
    with pytest.raises(UserError) as info:
        prepare_chat(str(path), "char", tmp_path / "text", chat_template="text")
    assert str(info.value) == (f"{path}:3: message 2 (assistant) holds '\\n\\n\\n', which "
                               f"ends a turn in the text chat template{SKIP_HINT}")
    assert not (tmp_path / "text").exists()
    kept = prepare_chat(str(path), "char", tmp_path / "text", chat_template="text",
                        skip_bad_rows=True)
    assert kept.meta["skipped_rows"] == 1
    assert kept.meta["train_documents"] + kept.meta["val_documents"] == 19
    tokens = prepare_chat(str(path), "char", tmp_path / "tokens")  # markers are ids: no limit
    assert tokens.meta["train_documents"] + tokens.meta["val_documents"] == 20


def test_a_file_of_no_known_format_is_an_error_even_when_skipping() -> None:
    path = FIXTURES / "plain_text.jsonl"
    with pytest.raises(UserError) as info:
        list(read_conversation_file(path, skip_bad_rows=True))
    message = str(info.value)
    assert message.startswith(f"{path}:1: not a conversation: expected an object with "
                              "'messages', 'conversations' or 'instruction'/'output'")
    assert "its fields are: text" in message and "OpenAI, ShareGPT or Alpaca" in message


def test_an_array_file_that_is_not_json_is_never_skipped() -> None:
    path = FIXTURES / "not_json.json"
    with pytest.raises(UserError, match=f"'{path}' is not valid JSON"):
        list(read_conversation_file(path, skip_bad_rows=True))


def test_a_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read input file"):
        list(read_conversation_file(tmp_path / "missing.jsonl"))


def test_is_conversation_file(tmp_path: Path) -> None:
    for name in ("openai.jsonl", "alpaca.json", "alpaca.jsonl", "sharegpt.jsonl",
                 "bad_rows.jsonl"):
        assert is_conversation_file(FIXTURES / name), name
    text = tmp_path / "notes.txt"
    shutil.copy(FIXTURES / "openai.jsonl", text)  # conversations, but not a JSON file's name
    broken = tmp_path / "broken.jsonl"
    broken.write_text('\n{"messages": [\n', encoding="utf-8")
    texts = tmp_path / "texts.json"
    texts.write_text('[{"text": "a"}, {"messages": []}]', encoding="utf-8")
    for path in (FIXTURES / "plain_text.jsonl", broken, texts, text, tmp_path / "missing.jsonl"):
        assert not is_conversation_file(path), path


def test_detect_format() -> None:
    assert detect_format({"messages": []}) == "messages"
    assert detect_format({"conversations": []}) == "sharegpt"
    assert detect_format({"instruction": "a", "output": "b"}) == "alpaca"
    assert detect_format({"instruction": "a"}) is None
    assert detect_format({"text": "a"}) is None
    assert detect_format([{"role": "user", "content": "a"}]) is None


@pytest.mark.parametrize(("roles", "problem"), [
    ([], "no messages"),
    (["assistant", "user"], "roles out of order: the conversation starts with an assistant "
                            "message (message 1)"),
    (["system", "assistant"], "roles out of order: the conversation starts with an assistant "
                              "message (message 2)"),
    (["user", "assistant", "system"], "roles out of order: a system message can only come "
                                      "first (message 3)"),
    (["system", "user", "user", "assistant"], "roles out of order: a user message follows a "
                                              "user message (message 3)"),
    (["system", "user"], "no assistant turn"),
    (["user", "assistant", "user"], None),  # ending on a user turn breaks no rule
])
def test_conversation_problem(roles: list[str], problem: str | None) -> None:
    found = conversation_problem([Message(role, "text") for role in roles])
    assert found == problem if problem is None else (found or "").startswith(problem)


def test_to_conversation_reports_content_parts_that_are_not_text() -> None:
    record = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
                           {"role": "assistant", "content": "A cat."}]}
    with pytest.raises(UserError, match=r"^x:5: message 1 \(user\) 'content' holds a "
                                        "'image_url' part, not a text part"):
        to_conversation(record, "x:5")


def test_to_conversation_reports_unknown_sharegpt_speakers_and_bad_fields() -> None:
    record = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "bot", "value": "Yo"}]}
    with pytest.raises(UserError, match=r"^x:1: unknown role 'bot' in message 2 \('from'\)"):
        to_conversation(record, "x:1")
    with pytest.raises(UserError, match=r"^x:2: 'output' is a number, not text"):
        to_conversation({"instruction": "Count.", "output": 3}, "x:2")
    with pytest.raises(UserError, match=r"^x:3: 'messages' is a string, not a list"):
        to_conversation({"messages": "Hi"}, "x:3")


def test_to_conversation_holds_a_record_to_the_format_asked_for() -> None:
    record = {"instruction": "Say hi.", "output": "Hi."}
    assert to_conversation(record, "x:1", "alpaca").messages[-1] == Message("assistant", "Hi.")
    with pytest.raises(UserError, match="^x:1: mixed formats: Alpaca record where"):
        to_conversation(record, "x:1", "sharegpt")
    with pytest.raises(UserError, match="unknown conversation format 'chatml'"):
        to_conversation(record, "x:1", "chatml")


@pytest.fixture
def local_datasets(request: pytest.FixtureRequest) -> None:
    """`datasets`, offline with a cache of this test's own (the test skips without it)."""
    pytest.importorskip("datasets")
    request.getfixturevalue("hf_offline")


@pytest.mark.usefixtures("local_datasets")
def test_dataset_conversations_from_a_local_json_dataset() -> None:
    files = [str(FIXTURES / "hf_messages.jsonl")]
    bad = BadRows()
    conversations = list(dataset_conversations("json", data_files=files, skip_bad_rows=True,
                                               bad=bad))
    assert [c.where for c in conversations] == ["json:row 1", "json:row 3"]
    assert conversations[1].messages[0] == Message("system", "Be brief.")
    assert bad.count == 1 and (bad.first or "").startswith(
        "json:row 2: roles out of order: the conversation starts with an assistant message")
    with pytest.raises(UserError, match=r"^json:row 2: roles out of order.*--skip-bad-rows"):
        list(dataset_conversations("json", data_files=files))
    with pytest.raises(UserError, match="no column 'conversation'.*pick one of: messages"):
        list(dataset_conversations("json", data_files=files, column="conversation"))


def test_dataset_conversations_without_datasets_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(UserError, match=r"pip install -c constraints.txt -e '\.\[hf\]'"):
        dataset_conversations("json", data_files=[str(FIXTURES / "hf_messages.jsonl")])
