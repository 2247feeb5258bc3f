"""Benchmark task files to questions: reads a task file (JSONL, a JSON array, MMLU's CSV or a
Parquet file), tells its format from its fields, and turns every row into an `Item`, the one
shape that `tasks.py` scores. The formats are those of the DCLM / nanochat CORE bundle
(multiple choice, schema, language modelling), the native files of HellaSwag, ARC, PIQA,
Winogrande, LAMBADA and MMLU, each rendered as lm-evaluation-harness renders it, so that the
same model gets the same scores from both, and questions to answer in words (GSM8K's
`question` / `answer`).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptscratch.errors import UserError

MULTIPLE_CHOICE = "multiple_choice"  # one context, several continuations: which is likeliest?
SCHEMA = "schema"  # several contexts, one continuation: after which is it likeliest?
LANGUAGE_MODELING = "language_modeling"  # one of each: does greedy decoding reproduce it?
GENERATIVE = "generative"  # a question: does the greedy answer's final answer match?

DELIMITER = " "  # between a context and its continuation (CORE's and lm-eval's default)


@dataclass(frozen=True)
class Item:
    """One question. Choice i is the text `contexts[i] + delimiter + continuations[i]`, scored
    by the log-probability of its delimiter and continuation given its context; `gold` is the
    right choice. A multiple-choice item repeats its context, a schema item its continuation;
    a language-modelling item has one choice (gold 0), right when greedy decoding reproduces
    it. (lm-evaluation-harness's `doc_to_text`, `doc_to_choice` and `target_delimiter`.)"""

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    gold: int
    where: str = ""  # `file:line`, for messages
    delimiter: str = DELIMITER
    # A generative item's bare question: what a chat model (`train --sft`) is asked as a user
    # message, where a base model continues `contexts[0]`.
    question: str = ""

    @property
    def choices(self) -> int:
        return len(self.contexts)

    def gold_text(self) -> str:
        """The item answered rightly: a few-shot example."""
        return self.contexts[self.gold] + self.delimiter + self.continuations[self.gold]


@dataclass(frozen=True)
class Task:
    """The items of one task file (or built-in task), its kind and where they came from."""

    name: str
    kind: str  # MULTIPLE_CHOICE | SCHEMA | LANGUAGE_MODELING
    items: tuple[Item, ...]
    source: str  # the file, or "built-in"
    format: str  # the detected format's name


Row = Mapping[str, Any]


class _Bad(Exception):
    """A row's problem, raised by a converter; `read_task` adds the file and line."""


def _field(row: Row, name: str) -> Any:
    if name not in row or row[name] is None:
        raise _Bad(f"no '{name}'")
    return row[name]


def _text(row: Row, name: str, empty_ok: bool = False) -> str:
    value = _field(row, name)
    if not isinstance(value, str):
        raise _Bad(f"'{name}' must be text, not {type(value).__name__}")
    if not value.strip() and not empty_ok:
        raise _Bad(f"'{name}' is empty")
    return value


def _texts(row: Row, name: str, at_least: int = 2) -> list[str]:
    value = _field(row, name)
    if (not isinstance(value, Sequence) or isinstance(value, str)
            or not all(isinstance(v, str) for v in value)):
        raise _Bad(f"'{name}' must be a list of texts")
    if len(value) < at_least:
        raise _Bad(f"'{name}' has {len(value)} entries; a question needs at least {at_least}")
    return list(value)


def _index(row: Row, name: str, choices: int, base: int = 0) -> int:
    """A gold index: a number or a numeric string, counted from `base`."""
    value = _field(row, name)
    try:
        index = int(value) - base
    except (TypeError, ValueError):
        raise _Bad(f"'{name}' must be a whole number, not {value!r}") from None
    if isinstance(value, bool) or not 0 <= index < choices or float(value) != int(value):
        raise _Bad(f"'{name}' ({value!r}) must be {base} to {choices - 1 + base}, one of the "
                   f"{choices} choices")
    return index


def _multiple_choice(context: str, choices: Sequence[str], gold: int, where: str) -> Item:
    return Item((context,) * len(choices), tuple(choices), gold, where)


# --- The formats: each turns a row into an Item (lm-evaluation-harness's prompt for it). -----

def _core_multiple_choice(row: Row, where: str) -> Item:
    choices = _texts(row, "choices")
    return _multiple_choice(_text(row, "query"), choices, _index(row, "gold", len(choices)),
                            where)


def _core_schema(row: Row, where: str) -> Item:
    contexts = _texts(row, "context_options")
    continuation = _text(row, "continuation")
    gold = _index(row, "gold", len(contexts))
    return Item(tuple(contexts), (continuation,) * len(contexts), gold, where)


def _core_language_modeling(row: Row, where: str) -> Item:
    return Item((_text(row, "context"),), (_text(row, "continuation"),), 0, where)


def _hellaswag_clean(text: str) -> str:
    """HellaSwag's WikiHow markup out, as lm-eval's `hellaswag` task does."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def _hellaswag(row: Row, where: str) -> Item:
    if "ctx_a" in row and "ctx_b" in row:
        ctx_b = _text(row, "ctx_b", empty_ok=True).capitalize()
        ctx = _text(row, "ctx_a", empty_ok=True) + " " + ctx_b
    else:
        ctx = _text(row, "ctx")
    label = row.get("activity_label")
    query = _hellaswag_clean(f"{label}: {ctx}" if isinstance(label, str) and label else ctx)
    endings = [_hellaswag_clean(e) for e in _texts(row, "endings")]
    return _multiple_choice(query, endings, _index(row, "label", len(endings)), where)


def _arc(row: Row, where: str) -> Item:
    question = _field(row, "question")
    if isinstance(question, Mapping):  # the original files: {"stem", "choices": [{text, label}]}
        choices_field: Any = question.get("choices")
        question = question.get("stem")
        if not isinstance(choices_field, list) or not all(isinstance(c, Mapping)
                                                          for c in choices_field):
            raise _Bad("'question.choices' must be a list of {text, label}")
        texts = [c.get("text") for c in choices_field]
        labels = [c.get("label") for c in choices_field]
    else:  # Hugging Face's allenai/ai2_arc: "choices": {"text": [...], "label": [...]}
        choices_field = _field(row, "choices")
        if not isinstance(choices_field, Mapping):
            raise _Bad("'choices' must be {text: [...], label: [...]}")
        texts = list(choices_field.get("text") or [])
        labels = list(choices_field.get("label") or [])
    if not isinstance(question, str) or not question.strip():
        raise _Bad("the question is empty")
    if len(texts) < 2 or len(texts) != len(labels) or not all(isinstance(t, str) for t in texts):
        raise _Bad("the choices need a text and a label each, at least two")
    key = str(_field(row, "answerKey"))
    if key not in [str(label) for label in labels]:
        raise _Bad(f"'answerKey' ({key!r}) is none of the choices' labels {labels}")
    gold = [str(label) for label in labels].index(key)
    return _multiple_choice(f"Question: {question}\nAnswer:", texts, gold, where)


def _piqa(row: Row, where: str) -> Item:
    solutions = [_text(row, "sol1"), _text(row, "sol2")]
    return _multiple_choice(f"Question: {_text(row, 'goal')}\nAnswer:", solutions,
                            _index(row, "label", 2), where)


def _winogrande(row: Row, where: str) -> Item:
    """lm-eval's partial scoring: each option fills the blank of the context, and the choice
    is scored by the likelihood of the sentence's rest after it."""
    sentence = _text(row, "sentence")
    blank = sentence.find("_")
    if blank < 0:
        raise _Bad("'sentence' has no blank ('_') to fill")
    options = [_text(row, "option1"), _text(row, "option2")]
    rest = sentence[blank + 1:].strip()
    gold = _index(row, "answer", 2, base=1)
    return Item(tuple(sentence[:blank] + o for o in options), (rest, rest), gold, where)


def _lambada(row: Row, where: str) -> Item:
    """The last word of a passage, right only if greedy decoding reproduces it."""
    words = _text(row, "text").strip().split(" ")
    if len(words) < 2:
        raise _Bad("'text' needs at least two words (a passage and its last word)")
    return Item((" ".join(words[:-1]),), (words[-1],), 0, where)


def _mmlu_item(question: str, choices: Sequence[str], gold: int, where: str) -> Item:
    letters = "ABCDEFGHIJ"[:len(choices)]
    lines = [question.strip()] + [f"{letter}. {choice}"
                                  for letter, choice in zip(letters, choices, strict=True)]
    return _multiple_choice("\n".join(lines) + "\nAnswer:", list(letters), gold, where)


def _mmlu(row: Row, where: str) -> Item:
    choices = _texts(row, "choices")
    answer = _field(row, "answer")
    if isinstance(answer, str) and len(answer) == 1 and answer.isalpha():
        answer = "ABCDEFGHIJ".find(answer.upper())
    return _mmlu_item(_text(row, "question"), choices,
                      _index({"answer": answer}, "answer", len(choices)), where)


def _question_answer(row: Row, where: str) -> Item:
    """A question to answer in words (GSM8K's fields): the model generates greedily after
    `Answer:` to the end of the line, and is right when its final answer is the answer's."""
    question = _text(row, "question")
    answer = _field(row, "answer")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) \
            or not str(answer).strip():
        raise _Bad("'answer' must be a text or a number")
    return question_item(question, str(answer).strip(), where)


def question_item(question: str, answer: str, where: str) -> Item:
    """A generative item: a base model continues `Question: ...\nAnswer:`, a chat model is
    asked the bare question."""
    return Item((f"Question: {question}\nAnswer:",), (answer,), 0, where, question=question)


@dataclass(frozen=True)
class Format:
    name: str
    kind: str
    fields: tuple[str, ...]  # what a row must have to be read as this format
    convert: Callable[[Row, str], Item]

    def describe(self) -> str:
        return f"{self.name} ({', '.join(self.fields)})"


FORMATS = (
    Format("core multiple choice", MULTIPLE_CHOICE, ("query", "choices", "gold"),
           _core_multiple_choice),
    Format("core schema", SCHEMA, ("context_options", "continuation", "gold"), _core_schema),
    Format("core language modelling", LANGUAGE_MODELING, ("context", "continuation"),
           _core_language_modeling),
    Format("hellaswag", MULTIPLE_CHOICE, ("ctx", "endings", "label"), _hellaswag),
    Format("arc", MULTIPLE_CHOICE, ("question", "answerKey"), _arc),
    Format("piqa", MULTIPLE_CHOICE, ("goal", "sol1", "sol2", "label"), _piqa),
    Format("winogrande", SCHEMA, ("sentence", "option1", "option2", "answer"), _winogrande),
    Format("mmlu", MULTIPLE_CHOICE, ("question", "choices", "answer"), _mmlu),
    Format("lambada", LANGUAGE_MODELING, ("text",), _lambada),
    Format("question / answer", GENERATIVE, ("question", "answer"), _question_answer),
)


def detect_format(fields: Sequence[str], where: str) -> Format:
    """The format whose fields a row has, the most specific first (LAMBADA's lone `text` is
    also in rows of other formats)."""
    matches = [f for f in FORMATS if set(f.fields) <= set(fields)]
    if not matches:
        known = "; ".join(f.describe() for f in FORMATS)
        raise UserError(f"{where}: not a task format gptscratch knows (its fields: "
                        f"{', '.join(sorted(fields)) or 'none'}); the formats known: {known}; "
                        "or MMLU's CSV (question, A, B, C, D, answer)")
    return max(matches, key=lambda f: len(f.fields))


# --- Reading files. --------------------------------------------------------------------------

def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); a task file is "
                            "JSON Lines (one object per line) or a JSON array of objects") from None
        # A JSON array has no line per row: number the rows instead.
        yield from enumerate(rows, start=1)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{number}: not valid JSON ({e.msg}); a .jsonl task file has "
                            "one JSON object per line") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """MMLU's CSV files: no header, `question, A, B, C, D, answer` (a header row is skipped)."""
    with path.open(newline="", encoding="utf-8") as f:
        for number, cells in enumerate(csv.reader(f), start=1):
            if not cells:
                continue
            if number == 1 and [c.strip().lower() for c in cells[:1]] == ["question"]:
                continue
            if len(cells) < 4:
                raise UserError(f"{path}:{number}: an MMLU CSV row is question, the choices, "
                                f"then the answer letter; this one has {len(cells)} cells")
            yield number, {"question": cells[0], "choices": cells[1:-1], "answer": cells[-1]}


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"reading {path} needs pyarrow; install it with: pip install "
                        "'gptscratch[hf]' (or give the task as JSON Lines)") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow's own errors for a damaged or non-Parquet file
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None
    yield from enumerate(rows, start=1)


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows(path)
    if suffix == ".parquet":
        return _parquet_rows(path)
    return _json_rows(path)


def read_task(path: str | Path, limit: int | None = None) -> Task:
    """The items of a task file (the first `limit`, if given), its format told from the
    fields of its first row; a bad row is an error naming its file, line and problem."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"task file '{path}' not found; give a task file (.jsonl, .json, "
                        ".csv or .parquet) or a built-in task such as 'shakespeare'")
    items: list[Item] = []
    fmt: Format | None = None
    for number, row in _rows(file):
        where = f"{file}:{number}"
        if not isinstance(row, Mapping):
            raise UserError(f"{where}: a task row must be a JSON object, not "
                            f"{type(row).__name__}")
        fmt = fmt or detect_format(list(row), where)
        try:
            items.append(fmt.convert(row, where))
        except _Bad as e:
            raise UserError(f"{where}: {e} (read as {fmt.describe()})") from None
        if limit is not None and len(items) >= limit:
            break
    if fmt is None:
        raise UserError(f"task file '{path}' has no rows; give a file with at least one question")
    return Task(file.stem, fmt.kind, tuple(items), str(file), fmt.name)
