"""Conversation data for supervised fine-tuning (SFT): chat and instruction records, validated.

The flow: conversation files (`.jsonl` or `.json`, also gzip or zstandard; OpenAI `messages`,
Alpaca or ShareGPT records) or a Hugging Face dataset -> `Conversation`s checked here (roles in
order, no empty turns, an assistant turn to learn from) -> a chat template renders them to token
ids for SFT. A bad record is a one-line `UserError` that starts with where it is
(`data.jsonl:7: ...`), or with `skip_bad_rows` is counted in `BadRows` and left out.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

from gptscratch.data.sources import _hf_failure, _no_column, load_hf_dataset
from gptscratch.data.sources.files import _kind, _load_json_array
from gptscratch.data.sources.text import NotUtf8, decode_utf8, open_bytes
from gptscratch.errors import UserError

ROLES = ("system", "user", "assistant")

_FORMAT_NAMES = {"messages": "OpenAI 'messages'", "alpaca": "Alpaca",
                 "sharegpt": "ShareGPT 'conversations'"}
# ShareGPT's `from` values: the original scrape's human/gpt, and the names other exports use.
_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                   "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant",
                   "bard": "assistant"}
_NOT_A_CONVERSATION = ("not a conversation: expected an object with 'messages', 'conversations' "
                       "or 'instruction'/'output' (the OpenAI, ShareGPT or Alpaca format)")
_SKIP_HINT = "; fix the row or pass --skip-bad-rows to skip such rows"
# is_conversation_file reads a JSON array's first record from at most this many bytes.
_HEAD_BYTES, _MAX_HEAD_BYTES = 1 << 16, 1 << 24


@dataclass(frozen=True)
class Message:
    """One turn: `role` is one of `ROLES`; `content` is its text, as given (not stripped)."""

    role: str
    content: str


@dataclass(frozen=True)
class Conversation:
    """A validated conversation and where it came from.

    Attributes:
        messages: An optional system message, then user and assistant turns alternating.
        where: `"path:line"` (a JSON line, 1-based), `"path:record N"` (a JSON array's
            element, 1-based) or `"dataset:row N"` (a Hugging Face dataset's row, 1-based).
    """

    messages: tuple[Message, ...]
    where: str


@dataclass
class BadRows:
    """The rows a reader skipped: how many, and the first one's problem, for the log."""

    count: int = 0
    first: str | None = None


class _Problem(Exception):
    """What is wrong with one record, said without where it is (`to_conversation` adds it)."""


def detect_format(record: object) -> str | None:
    """The format of one record, from its fields.

    Args:
        record: One JSON record.

    Returns:
        `"messages"` (OpenAI: `{"messages": [{"role", "content"}]}`), `"alpaca"`
        (`{"instruction", "input" (optional), "output"}`, optional `"system"`), `"sharegpt"`
        (`{"conversations": [{"from", "value"}]}`), or None for anything else.
    """
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    return None


def conversation_problem(messages: Sequence[Message]) -> str | None:
    """What is wrong with a conversation (the first problem, in message order), or None.

    The rules: at least one message; a system message only first; then user and assistant
    strictly alternating, starting with user; every content non-empty after strip; at least one
    assistant turn. Messages are counted from 1 (`"message 3 (assistant) is empty"`).
    """
    if not messages:
        return "no messages; a conversation needs a user message and an assistant answer"
    start = 1 if messages[0].role == "system" else 0
    for i, message in enumerate(messages, 1):
        problem = _role_problem(message.role, i, start, messages[i - 2].role if i > 1 else None)
        if problem is None and not message.content.strip():
            problem = f"message {i} ({message.role}) is empty"
        if problem is not None:
            return problem
    if not any(m.role == "assistant" for m in messages):
        return "no assistant turn; a conversation needs at least one assistant message"
    return None


def _role_problem(role: str, i: int, start: int, previous: str | None) -> str | None:
    """What is wrong with message `i`'s role (`start`: 1 after a leading system message)."""
    if role not in ROLES:
        return f"unknown role {role[:40]!r} in message {i}; roles are {', '.join(ROLES)}"
    if role == "system":
        return None if i == 1 else ("roles out of order: a system message can only come "
                                    f"first (message {i})")
    if role == ("user" if (i - 1 - start) % 2 == 0 else "assistant"):
        return None
    if previous is None or previous == "system":
        return (f"roles out of order: the conversation starts with an assistant message "
                f"(message {i}); start with a user message (after an optional system message)")
    return (f"roles out of order: {_a(role)} message follows {_a(previous)} message "
            f"(message {i}); user and assistant must alternate")


def _a(role: str) -> str:
    return "an assistant" if role == "assistant" else f"a {role}"


def to_conversation(record: object, where: str, fmt: str | None = None) -> Conversation:
    """One record as a validated conversation.

    Args:
        record: One JSON record (or a dataset row) in one of the three formats.
        where: Where the record is, the start of every error (`"data.jsonl:7"`).
        fmt: The format the record must be in (`"messages"`, `"alpaca"`, `"sharegpt"`), or
            None to detect it.

    Raises:
        UserError: `"<where>: <problem>"`: not a conversation, not in `fmt`, a field of the
            wrong type, an unknown role, roles out of order, an empty turn, no assistant turn.
    """
    if fmt is not None and fmt not in _PARSERS:
        raise UserError(f"unknown conversation format {fmt!r}; use one of: "
                        f"{', '.join(_PARSERS)}")
    return _checked(lambda: _parse(record, fmt), where)


def _parse(record: object, fmt: str | None) -> tuple[Message, ...]:
    detected = detect_format(record)
    if detected is None:
        raise _Problem(_not_a_conversation(record))
    if fmt is not None and detected != fmt:
        raise _Problem(f"mixed formats: {_FORMAT_NAMES[detected]} record where "
                       f"{_FORMAT_NAMES[fmt]} records were expected (the format of the first "
                       "record); keep one format per file")
    assert isinstance(record, dict)  # detect_format said so
    return _PARSERS[detected](record)


def _checked(parse: Callable[[], tuple[Message, ...]], where: str) -> Conversation:
    """The messages `parse` gives as a Conversation, or a UserError that starts with `where`."""
    try:
        messages = parse()
    except _Problem as exc:
        raise UserError(f"{where}: {exc}") from None
    problem = conversation_problem(messages)
    if problem is not None:
        raise UserError(f"{where}: {problem}")
    return Conversation(messages, where)


def _not_a_conversation(record: object) -> str:
    if isinstance(record, dict):
        fields = ", ".join(str(k)[:40] for k in list(record)[:20]) or "none"
        return f"{_NOT_A_CONVERSATION}; its fields are: {fields}"
    return f"{_NOT_A_CONVERSATION}; it is {_json_type(record)}"


def _json_type(value: object) -> str:
    """The JSON name of a value's type, with its article: `an object`, `a number`, `null`."""
    if value is None:
        return "null"
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number" if isinstance(value, int | float)
                     else f"a {type(value).__name__}")


def _openai_messages(record: dict[str, Any]) -> tuple[Message, ...]:
    return _turns(record["messages"], "messages", "role", "content", None)


def _sharegpt_messages(record: dict[str, Any]) -> tuple[Message, ...]:
    return _turns(record["conversations"], "conversations", "from", "value", _SHAREGPT_ROLES)


def _turns(value: object, field: str, role_key: str, text_key: str,
           roles: dict[str, str] | None) -> tuple[Message, ...]:
    """A list of `{role_key, text_key}` objects as messages; `roles` maps each speaker to a
    role (ShareGPT), or None keeps the role as given (an unknown one is reported later)."""
    if not isinstance(value, list):
        raise _Problem(f"'{field}' is {_json_type(value)}, not a list of "
                       f"{{'{role_key}', '{text_key}'}} objects")
    messages = []
    for i, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise _Problem(f"message {i} is {_json_type(item)}, not an object with "
                           f"'{role_key}' and '{text_key}'")
        speaker = item.get(role_key)
        if not isinstance(speaker, str):
            raise _Problem(f"message {i} has no '{role_key}' text; roles are "
                           f"{', '.join(roles or ROLES)}")
        role = speaker if roles is None else roles.get(speaker.lower())
        if role is None:
            raise _Problem(f"unknown role {speaker[:40]!r} in message {i} ('{role_key}'); "
                           f"roles are {', '.join(roles or ROLES)}")
        if text_key not in item:
            raise _Problem(f"message {i} ({role}) has no '{text_key}'")
        messages.append(Message(role, _text(item[text_key], i, role, text_key)))
    return tuple(messages)


def _text(value: object, i: int, role: str, key: str) -> str:
    """A message's content: a string, or OpenAI content parts (`{"type": "text", "text"}`)
    joined with nothing between them, as the server joins them."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _Problem(f"message {i} ({role}) '{key}' is {_json_type(value)}, not text or a "
                       "list of text parts")
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            what = f"a {str(kind)[:40]!r} part" if kind is not None else _json_type(part)
            raise _Problem(f"message {i} ({role}) '{key}' holds {what}, not a text part; only "
                           "{'type': 'text', 'text': ...} parts are read")
        if not isinstance(part.get("text"), str):
            raise _Problem(f"message {i} ({role}) '{key}' has a text part whose 'text' is "
                           f"{_json_type(part.get('text'))}, not a string")
    return "".join(part["text"] for part in value)


def _alpaca_messages(record: dict[str, Any]) -> tuple[Message, ...]:
    """System (if non-empty), user = instruction (+ blank line + input if non-empty),
    assistant = output."""
    instruction, output = _field(record, "instruction"), _field(record, "output")
    extra, system = _field(record, "input", optional=True), _field(record, "system", optional=True)
    for name, value in (("instruction", instruction), ("output", output)):
        if not value.strip():
            raise _Problem(f"'{name}' is empty")
    user = instruction + ("\n\n" + extra if extra.strip() else "")
    head = (Message("system", system),) if system.strip() else ()
    return (*head, Message("user", user), Message("assistant", output))


def _field(record: dict[str, Any], name: str, optional: bool = False) -> str:
    value = record.get(name)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise _Problem(f"'{name}' is {_json_type(value)}, not text")
    return value


_PARSERS: dict[str, Callable[[dict[str, Any]], tuple[Message, ...]]] = {
    "messages": _openai_messages, "alpaca": _alpaca_messages, "sharegpt": _sharegpt_messages}


def read_conversation_file(path: Path, *, skip_bad_rows: bool = False,
                           bad: BadRows | None = None) -> Iterator[Conversation]:
    """Stream the conversations of one file, read as it goes.

    A file is JSON lines (one record a line, blank lines ignored) or one JSON array of records
    (told by its first character, as `files.py` tells them); `.jsonl` or `.json`, compressed
    with gzip (`.gz`) or zstandard (`.zst`) or not. Its first record sets the format that all
    its records must share.

    Args:
        path: The file.
        skip_bad_rows: Leave out bad rows (a line that is not JSON, a record of another format
            or a bad conversation), counting them in `bad`, instead of raising.
        bad: Where skipped rows are counted.

    Raises:
        UserError: A bad row (unless skipped); a file that cannot be read, is not UTF-8 or (an
            array) is not valid JSON; a first record of no known format (never skipped).
    """
    kind, compression = _kind(path)
    if kind != "json":
        raise UserError(f"'{path}' is not a conversation file; give .jsonl or .json files "
                        "(also .gz or .zst)")
    bad = bad if bad is not None else BadRows()
    try:
        with open_bytes(path, compression) as f:
            yield from _conversations(_records(f, path, compression), skip_bad_rows, bad)
    except NotUtf8 as exc:
        raise UserError(f"{exc}; convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read input file '{path}' ({exc}); check it") from exc


def _records(f: IO[bytes], path: Path,
             compression: str | None) -> Iterator[tuple[str, object, str | None]]:
    """(where, record, None) for each record, or (where, None, problem) for a line that is
    not JSON."""
    if _head(f).startswith(b"["):
        for n, record in enumerate(_load_json_array(f, path, compression), 1):
            yield f"{path}:record {n}", record, None
        return
    offset = 0
    for lineno, raw in enumerate(f, 1):
        line = decode_utf8(raw, path, offset, compression)
        offset += len(raw)
        if lineno == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        try:
            record = json.loads(line.rstrip("\r\n"))
        except ValueError as exc:
            # The column within the file's line (the decoder's own "line 1" says nothing).
            why = (f"{exc.msg} at column {exc.pos + 1}" if isinstance(exc, json.JSONDecodeError)
                   else str(exc))
            yield f"{path}:{lineno}", None, f"{path}:{lineno}: not valid JSON ({why})"
            continue
        yield f"{path}:{lineno}", record, None


def _head(f: IO[bytes]) -> bytes:
    """The file's first bytes, left in place, after a byte-order mark and white space."""
    head = f.peek(64) if isinstance(f, io.BufferedReader | gzip.GzipFile) else b""
    return head.removeprefix(codecs.BOM_UTF8).lstrip()


def _conversations(records: Iterable[tuple[str, object, str | None]], skip_bad_rows: bool,
                   bad: BadRows) -> Iterator[Conversation]:
    """The good records as conversations, in the format of the first record."""
    fmt = None
    for where, record, problem in records:
        if problem is None and fmt is None:
            fmt = detect_format(record)
            if fmt is None:
                raise UserError(f"{where}: {_not_a_conversation(record)}; give a file whose "
                                "records are all in one of these formats")
        found = _conversation_or_problem(record, where, fmt) if problem is None else problem
        if isinstance(found, Conversation):
            yield found
        else:
            note_bad_row(found, skip_bad_rows, bad)


def _conversation_or_problem(record: object, where: str, fmt: str | None) -> Conversation | str:
    try:
        return to_conversation(record, where, fmt)
    except UserError as exc:
        return str(exc)


def note_bad_row(problem: str, skip_bad_rows: bool, bad: BadRows) -> None:
    """Raise a bad row's problem (`where: what`), or with `skip_bad_rows` count it; also for
    rows a chat template cannot lay out (`prepare_chat`)."""
    if not skip_bad_rows:
        raise UserError(problem + _SKIP_HINT)
    bad.count += 1
    if bad.first is None:
        bad.first = problem


def is_conversation_file(path: Path) -> bool:
    """Whether a `.jsonl` or `.json` file (also `.gz`, `.zst`) holds conversations: whether its
    first record is in one of the three formats. Reads only the file's start; False for other
    files and for files that cannot be read."""
    kind, compression = _kind(path)
    if kind != "json":
        return False
    try:
        with open_bytes(path, compression) as f:
            array = _head(f).startswith(b"[")
            return detect_format(_first_array_record(f) if array else _first_line(f)) is not None
    # Any failure to read means "no": open_bytes, gzip, zstandard and json each raise their own.
    except Exception:
        return False


def _first_line(f: IO[bytes]) -> object:
    for raw in f:
        if raw.strip():
            return json.loads(raw.decode("utf-8-sig"))
    return None


def _first_array_record(f: IO[bytes]) -> object:
    """A JSON array's first element, reading more of the file (doubling) until it parses."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    text, want = "", _HEAD_BYTES
    while True:
        chunk = f.read(want)
        text += decoder.decode(chunk, final=not chunk)
        try:
            return json.JSONDecoder().raw_decode(text.lstrip()[1:].lstrip())[0]
        except ValueError:
            if not chunk or len(text) >= _MAX_HEAD_BYTES:
                raise
        want *= 2


def read_conversations(paths: Sequence[Path], *, skip_bad_rows: bool = False,
                       bad: BadRows | None = None) -> tuple[Iterator[Conversation], BadRows]:
    """All the files' conversations, file after file, and the `BadRows` that counts the rows
    skipped (with `skip_bad_rows`) as the iterator runs (`bad`, or a new one). Errors as
    `read_conversation_file`."""
    bad = bad if bad is not None else BadRows()

    def conversations() -> Iterator[Conversation]:
        for path in paths:
            yield from read_conversation_file(path, skip_bad_rows=skip_bad_rows, bad=bad)

    return conversations(), bad


def dataset_conversations(name: str, split: str = "train", column: str = "messages", *,
                          data_files: list[str] | None = None, skip_bad_rows: bool = False,
                          bad: BadRows | None = None) -> Iterator[Conversation]:
    """A Hugging Face dataset's conversations, streamed from its `column` of OpenAI-style
    message lists (`[{"role", "content"}]`); each one's where is `"<name>:row N"`.

    Args:
        name: A dataset on the Hub, or a local builder (`"json"`) reading `data_files`.
        split: The split, e.g. `"train"` or `"train[:10%]"`.
        column: The column holding each row's messages.
        data_files: Local files for a builder.
        skip_bad_rows: Leave out bad rows, counting them in `bad`, instead of raising.
        bad: Where skipped rows are counted.

    Raises:
        UserError: `datasets` is not installed, the dataset cannot be loaded (offline and not
            cached, a bad name or file), it has no `column`, or a bad row (unless skipped).
            Loading errors are raised at the call; row errors as the iterator runs.
    """
    ds = load_hf_dataset(name, split, data_files, False, column)
    return _dataset_rows(ds, name, column, skip_bad_rows, bad if bad is not None else BadRows())


def _dataset_rows(ds: Iterable[dict[str, Any]], name: str, column: str, skip_bad_rows: bool,
                  bad: BadRows) -> Iterator[Conversation]:
    try:
        for i, row in enumerate(ds):
            if column not in row:
                raise UserError(_no_column(name, column, list(row)))
            found = _row_conversation_or_problem(row[column], column, f"{name}:row {i + 1}")
            if isinstance(found, Conversation):
                yield found
            else:
                note_bad_row(found, skip_bad_rows, bad)
    except UserError:
        raise
    except Exception as exc:  # a stream that fails midway: the network, a bad file
        raise UserError(_hf_failure(name, exc)) from exc


def _row_conversation_or_problem(value: object, column: str, where: str) -> Conversation | str:
    try:
        return _checked(partial(_turns, value, column, "role", "content", None), where)
    except UserError as exc:
        return str(exc)
