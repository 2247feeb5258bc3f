"""`gptscratch eval --task` on checkpoints: the table and the JSON, several tasks at once, the
same scores batched and one choice at a time, a Hugging Face GPT-2 folder, and the one-line
errors for bad task files and flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PLAYS, cli_error

from gptscratch import api
from gptscratch.cli import main


def play_lines() -> list[str]:
    return [line for line in PLAYS.read_text(encoding="utf-8").splitlines()
            if len(line.split()) >= 5][:60]


@pytest.fixture(scope="module")
def task_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three small tasks in the tiny model's characters: multiple choice, schema, LM."""
    folder = tmp_path_factory.mktemp("tasks")
    # The tiny model's context is 32 characters: continuations of a few words.
    lines = [" ".join(line.split()[:3]) for line in play_lines()]
    mc = [{"query": a, "choices": [b, lines[(i * 7 + 3) % len(lines)]], "gold": 0}
          for i, (a, b) in enumerate(zip(lines[:20], lines[1:21], strict=True))]
    schema = [{"context_options": [lines[i], lines[i + 20]], "continuation": lines[i + 1],
               "gold": 0} for i in range(15)]
    lm = [{"context": " ".join(line.split()[:-1]), "continuation": line.split()[-1]}
          for line in lines[30:45]]
    files = {}
    for name, rows in (("mc", mc), ("schema", schema), ("lm", lm)):
        files[name] = folder / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return files


def test_the_table_names_every_task_and_the_core_mean(tiny_run: Path, task_files: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", "--ckpt", str(tiny_run), "--task", str(task_files["mc"]),
                 "--task", str(task_files["schema"]), "--task", str(task_files["lm"])])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["task", "type", "items", "acc", "acc_norm", "chance", "centered"]
    assert [r.split()[:3] for r in lines[2:5]] == [["mc", "multiple_choice", "20"],
                                                  ["schema", "schema", "15"],
                                                  ["lm", "language_modeling", "15"]]
    assert lines[5].startswith("CORE (mean centered accuracy over 3 tasks): ")


def test_json_carries_the_results_and_their_settings(tiny_run: Path,
                                                     task_files: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--ckpt", str(tiny_run), "--task", str(task_files["mc"]), "--json",
                 "--shots", "2", "--limit", "10", "--batch-size", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    (task,) = report["tasks"]
    assert task["name"] == "mc" and task["items"] == 10 and task["format"] == "core multiple choice"
    assert task["chance"] == 0.5 and 0 <= task["accuracy"] <= 1
    assert task["centered"] == pytest.approx((task["accuracy_norm"] - 0.5) / 0.5)
    assert report["core"] == task["centered"]
    assert report["settings"]["shots"] == 2 and report["settings"]["limit"] == 10
    assert report["settings"]["batch_size"] == 5 and report["items_per_s"] > 0


def test_batched_and_one_choice_at_a_time_agree(tiny_run: Path,
                                                task_files: dict[str, Path]) -> None:
    files = list(task_files.values())
    one = api.evaluate_tasks(tiny_run, files, batch_size=1, shots=1)
    many = api.evaluate_tasks(tiny_run, files, batch_size=64, shots=1)
    assert [t.accuracy for t in one.tasks] == [t.accuracy for t in many.tasks]
    assert [t.accuracy_norm for t in one.tasks] == [t.accuracy_norm for t in many.tasks]


def test_a_hugging_face_gpt2_folder_is_scored(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from hf_models import make_hf_model

    make_hf_model(tmp_path / "gpt2", vocab_size=50257, n_positions=64)
    task = tmp_path / "hellaswag.jsonl"
    task.write_text(json.dumps({"ctx": "A man sits down and", "label": 1,
                                "endings": ["eats a cloud.", "reads a book."]}) + "\n")
    report = api.evaluate_tasks(tmp_path / "gpt2", [task])
    assert report.tasks[0].format == "hellaswag" and report.tasks[0].items == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "missing.jsonl"], "error: task file 'missing.jsonl' not found"),
    (["--task", "mc", "--data", "x.txt"], "error: --data and --task measure different things"),
    (["--shots", "2"], "error: --shots applies to benchmark tasks; add --task FILE"),
    (["--limit", "3"], "error: --limit applies to benchmark tasks"),
    (["--task", "mc", "--shots", "20"], "error: --shots 20 needs more than 20 items in mc"),
    (["--task", "mc", "--limit", "0"], "error: limit (0) must be a whole number >= 1"),
    (["--task", "bad"], "bad.jsonl:2: no 'gold' (read as core multiple choice"),
    (["--task", "shakespeare:nope"], "error: no built-in task 'shakespeare:nope'"),
])
def test_bad_tasks_and_flags_are_one_line_errors(tiny_run: Path, task_files: dict[str, Path],
                                                 tmp_path: Path, args: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a", "choices": ["b", "c"], "gold": 0}\n'
                   '{"query": "a", "choices": ["b", "c"]}\n')
    args = [str(task_files["mc"]) if a == "mc" else str(bad) if a == "bad" else a for a in args]
    line = cli_error(["eval", "--ckpt", str(tiny_run), *args], capsys)
    assert message in line
