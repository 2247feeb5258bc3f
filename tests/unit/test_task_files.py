"""Task files to items: each format's rows rendered as lm-evaluation-harness renders them, the
format told from the fields, and a one-line error naming the file, line and problem for a bad
row or an unknown format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptscratch.errors import UserError
from gptscratch.evaluation.task_files import (
    FORMATS,
    LANGUAGE_MODELING,
    MULTIPLE_CHOICE,
    SCHEMA,
    Item,
    read_task,
)

pytestmark = pytest.mark.unit


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_item(tmp_path: Path, row: dict, name: str = "task.jsonl") -> tuple[str, str, Item]:
    task = read_task(write_jsonl(tmp_path / name, [row]))
    assert len(task.items) == 1
    return task.format, task.kind, task.items[0]


def test_core_multiple_choice(tmp_path: Path) -> None:
    fmt, kind, item = one_item(tmp_path, {"query": "The sky is", "choices": ["blue", "green"],
                                          "gold": 0})
    assert (fmt, kind) == ("core multiple choice", MULTIPLE_CHOICE)
    assert item.contexts == ("The sky is", "The sky is")
    assert item.continuations == ("blue", "green") and item.gold == 0 and item.delimiter == " "
    assert item.gold_text() == "The sky is blue"


def test_core_schema(tmp_path: Path) -> None:
    fmt, kind, item = one_item(tmp_path, {"context_options": ["Anna ran.", "Anna slept."],
                                          "continuation": "She was tired.", "gold": 1})
    assert (fmt, kind) == ("core schema", SCHEMA)
    assert item.contexts == ("Anna ran.", "Anna slept.")
    assert item.continuations == ("She was tired.",) * 2 and item.gold == 1


def test_core_language_modelling(tmp_path: Path) -> None:
    fmt, kind, item = one_item(tmp_path, {"context": "To be, or not to", "continuation": "be"})
    assert (fmt, kind) == ("core language modelling", LANGUAGE_MODELING)
    assert (item.contexts, item.continuations, item.gold) == (("To be, or not to",), ("be",), 0)


def test_hellaswag_is_cleaned_as_lm_eval_does(tmp_path: Path) -> None:
    row = {"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes "
           "over the snow covering the window of a car, and a woman wearing winter clothes "
           "smiles.", "ctx_b": "then", "ctx": "ignored when ctx_a and ctx_b are there",
           "endings": [", the man adds wax to the windshield [title] and cuts it.",
                       ", a person board a ski lift, while two men supporting the head of the "
                       "person wearing winter clothes snow as the we girls sled.",
                       ", the man puts on a christmas coat, knitted with netting.",
                       ", the man continues removing the snow on his car."], "label": "3"}
    fmt, kind, item = one_item(tmp_path, row)
    assert (fmt, kind) == ("hellaswag", MULTIPLE_CHOICE)
    assert item.contexts[0] == ("Removing ice from car: Then, the man writes over the snow "
                                "covering the window of a car, and a woman wearing winter "
                                "clothes smiles. Then")
    assert item.continuations[0] == ", the man adds wax to the windshield. and cuts it."
    assert item.gold == 3


def test_arc_in_both_layouts(tmp_path: Path) -> None:
    hf = {"id": "x", "question": "Which is a metal?", "answerKey": "B",
          "choices": {"text": ["wood", "iron", "glass"], "label": ["A", "B", "C"]}}
    original = {"id": "x", "answerKey": "2", "question": {"stem": "Which is a metal?", "choices": [
        {"text": "wood", "label": "1"}, {"text": "iron", "label": "2"},
        {"text": "glass", "label": "3"}]}}
    for i, row in enumerate((hf, original)):
        fmt, _, item = one_item(tmp_path, row, f"arc{i}.jsonl")
        assert fmt == "arc"
        assert item.contexts[0] == "Question: Which is a metal?\nAnswer:"
        assert item.continuations == ("wood", "iron", "glass") and item.gold == 1


def test_piqa_winogrande_lambada(tmp_path: Path) -> None:
    _, _, piqa = one_item(tmp_path, {"goal": "Open a jar", "sol1": "twist the lid",
                                     "sol2": "bake the lid", "label": 0}, "piqa.jsonl")
    assert piqa.contexts[0] == "Question: Open a jar\nAnswer:" and piqa.gold == 0
    assert piqa.continuations == ("twist the lid", "bake the lid")
    fmt, kind, wino = one_item(tmp_path, {"sentence": "The cup fell off the shelf because _ was "
                                          "wobbly.", "option1": "the cup", "option2": "the shelf",
                                          "answer": "2"}, "wino.jsonl")
    assert (fmt, kind) == ("winogrande", SCHEMA)
    assert wino.contexts == ("The cup fell off the shelf because the cup",
                             "The cup fell off the shelf because the shelf")
    assert wino.continuations == ("was wobbly.",) * 2 and wino.gold == 1
    fmt, kind, lam = one_item(tmp_path, {"text": "He opened the door and saw his dog"},
                              "lambada.jsonl")
    assert (fmt, kind) == ("lambada", LANGUAGE_MODELING)
    assert lam.contexts == ("He opened the door and saw his",) and lam.continuations == ("dog",)


def test_mmlu_csv_and_rows(tmp_path: Path) -> None:
    csv_file = tmp_path / "abstract_algebra_test.csv"
    csv_file.write_text('"What is 2+2, in Z_3?",0,1,2,3,B\nSecond?,a,b,c,d,D\n', encoding="utf-8")
    task = read_task(csv_file)
    assert (task.format, task.kind, len(task.items)) == ("mmlu", MULTIPLE_CHOICE, 2)
    first = task.items[0]
    assert first.contexts[0] == "What is 2+2, in Z_3?\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:"
    assert first.continuations == ("A", "B", "C", "D") and first.gold == 1
    _, _, row = one_item(tmp_path, {"question": "Q?", "subject": "x", "choices": ["a", "b"],
                                    "answer": 1}, "mmlu.jsonl")
    assert row.contexts[0] == "Q?\nA. a\nB. b\nAnswer:" and row.gold == 1


def test_parquet_rows_are_read(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"question": "Q?", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": 2}]), path)
    task = read_task(path)
    assert task.format == "mmlu" and task.items[0].gold == 2


def test_a_json_array_and_a_limit(tmp_path: Path) -> None:
    rows = [{"query": f"q{i}", "choices": ["a", "b"], "gold": i % 2} for i in range(5)]
    path = tmp_path / "task.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    task = read_task(path, limit=3)
    assert [i.contexts[0] for i in task.items] == ["q0", "q1", "q2"]
    assert task.name == "task" and task.source == str(path)


def test_the_most_specific_format_wins() -> None:
    names = {f.name for f in FORMATS}
    assert len(names) == len(FORMATS)
    # A LAMBADA-like `text` beside a core multiple-choice row's fields is still multiple choice.
    from gptscratch.evaluation.task_files import detect_format

    assert detect_format(["query", "choices", "gold", "text"], "f").name == "core multiple choice"
    assert detect_format(["text", "domain"], "f").name == "lambada"


@pytest.mark.parametrize(("row", "message"), [
    ({"ctx": "c", "endings": ["a", "b"], "label": 5}, "t.jsonl:2: 'label' (5) must be 0 to 1"),
    ({"query": "q", "choices": ["a"], "gold": 0}, "t.jsonl:2: 'choices' has 1 entries"),
    ({"query": "q", "choices": "ab", "gold": 0}, "t.jsonl:2: 'choices' must be a list of texts"),
    ({"query": " ", "choices": ["a", "b"], "gold": 0}, "t.jsonl:2: 'query' is empty"),
    ({"query": "q", "choices": ["a", "b"], "gold": "x"},
     "t.jsonl:2: 'gold' must be a whole number, not 'x'"),
    ({"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"},
     "t.jsonl:2: 'sentence' has no blank"),
    ({"question": "q", "answerKey": "E", "choices": {"text": ["a", "b"], "label": ["A", "B"]}},
     "t.jsonl:2: 'answerKey' ('E') is none of the choices' labels"),
])
def test_a_bad_row_names_its_file_line_and_problem(tmp_path: Path, row: dict,
                                                   message: str) -> None:
    good = {k: v for k, v in row.items()}
    path = tmp_path / "t.jsonl"
    first = {"ctx": "c", "endings": ["a", "b"], "label": 0} if "ctx" in row else None
    rows = [first or _good_twin(good), row]
    write_jsonl(path, rows)
    with pytest.raises(UserError) as e:
        read_task(path)
    text = str(e.value)
    assert text.startswith(str(tmp_path / message.split(":")[0])), text
    assert message.split(":", 1)[1] in text, text
    assert "\n" not in text


def _good_twin(row: dict) -> dict:
    """A valid row of the same format as `row`, for line 1."""
    if "query" in row:
        return {"query": "q", "choices": ["a", "b"], "gold": 0}
    if "sentence" in row:
        return {"sentence": "a _ b", "option1": "x", "option2": "y", "answer": "1"}
    return {"question": "q", "answerKey": "A", "choices": {"text": ["a", "b"], "label": ["A", "B"]}}


def test_an_unknown_format_lists_the_known_ones(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "p", "completion": "c"}])
    with pytest.raises(UserError) as e:
        read_task(path)
    text = str(e.value)
    assert text.startswith(f"{path}:1: not a task format gptscratch knows (its fields: "
                           "completion, prompt)")
    for f in FORMATS:
        assert f.describe() in text


@pytest.mark.parametrize(("content", "message"), [
    ('{"query": "q", "choices": ["a", "b"], "gold": 0}\n{"query": \n', ":2: not valid JSON"),
    ('[{"query": "q",', ":1: not valid JSON"),
    ("\n\n", "has no rows"),
    ('["a row that is text"]', ":1: a task row must be a JSON object, not str"),
])
def test_unreadable_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / ("t.json" if content.startswith("[") else "t.jsonl")
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_task(path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="task file '.*nope.jsonl' not found; give a task file"):
        read_task(tmp_path / "nope.jsonl")


def test_questions_to_answer_in_words(tmp_path: Path) -> None:
    from gptscratch.evaluation.task_files import GENERATIVE

    fmt, kind, item = one_item(tmp_path, {"question": "What is 6 times 7?",
                                          "answer": "6 * 7 = 42\n#### 42"})
    assert (fmt, kind) == ("question / answer", GENERATIVE)
    assert item.contexts == ("Question: What is 6 times 7?\nAnswer:",)
    assert item.continuations == ("6 * 7 = 42\n#### 42",)
    _, _, number = one_item(tmp_path, {"question": "Two plus two?", "answer": 4}, "n.jsonl")
    assert number.continuations == ("4",)
