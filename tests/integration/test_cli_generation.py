"""The `sample` and `chat` commands end to end on a tiny trained model."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from gptscratch import api
from gptscratch.cli import main
from gptscratch.generation.script import script_format

SEP = "-" * 40 + "\n"


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 0, capsys.readouterr().err
    return capsys.readouterr().out


@pytest.fixture(autouse=True)
def _no_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


def test_samples_are_one_batch_and_reproducible(tiny_run: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sample", "--ckpt", str(tiny_run), "--prompt", "ROMEO:", "--max-new-tokens", "25",
            "--num-samples", "3", "--seed", "5", "--temperature", "1.0"]
    out = _run(args, capsys)
    samples = out.split(SEP)
    assert len(samples) == 3 and all(s.startswith("ROMEO:") for s in samples)
    assert len(set(samples)) == 3
    assert _run(args, capsys) == out


def test_stop_string_ends_each_sample_cleanly(tiny_run: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(["sample", "--ckpt", str(tiny_run), "--prompt", "A", "--max-new-tokens", "200",
                "--num-samples", "4", "--seed", "1", "--stop", "e"], capsys)
    for sample in out.split(SEP):
        assert "e" not in sample


def test_json_output_has_logprobs(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(["sample", "--ckpt", str(tiny_run), "--prompt", "To be", "--max-new-tokens",
                "12", "--num-samples", "2", "--seed", "3", "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert len(row["token_ids"]) == len(row["logprobs"]) == 12
        assert all(lp <= 0 for lp in row["logprobs"]) and row["finish_reason"] == "length"


def test_greedy_is_the_same_with_and_without_the_cache(
        tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["sample", "--ckpt", str(tiny_run), "--prompt", "KING:", "--max-new-tokens", "60",
            "--temperature", "0", "--dtype", "float32"]
    assert _run(base, capsys) == _run([*base, "--no-cache"], capsys)


def test_beam_search_from_the_cli_and_api(tiny_run: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(["sample", "--ckpt", str(tiny_run), "--prompt", "The ", "--max-new-tokens", "15",
                "--beams", "4", "--num-samples", "2"], capsys)
    assert len(out.split(SEP)) == 2
    best = api.complete(tiny_run, "The ", max_new_tokens=15, beams=4, num_samples=4)
    assert [c.score for c in best] == sorted((c.score for c in best), reverse=True)
    assert out.split(SEP)[0] == "The " + best[0].text + "\n"


def test_speaker_mode_prints_one_speech(tiny_run: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(["sample", "--ckpt", str(tiny_run), "--speaker", "menenius",
                "--until-next-speaker", "--max-new-tokens", "120", "--seed", "2"], capsys)
    assert out.startswith("MENENIUS:\n")
    script = script_format(api.load(tiny_run).checkpoint)
    assert script is not None
    body = out.splitlines()[1:]
    assert not any(line.endswith(":") and line[:-1] in script.speakers for line in body)


def test_chat_reads_prompts_from_a_pipe(tiny_run: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("ROMEO:\n\nJULIET:\n/quit\nnever read\n"))
    out = _run(["chat", "--ckpt", str(tiny_run), "--max-new-tokens", "10", "--seed", "0"],
               capsys)
    # Piped, each answer is a block under its echoed prompt, blocks a blank line apart (turn
    # i uses seed + i); an empty line is skipped and /quit ends the loop.
    expected = [api.generate(tiny_run, p, max_new_tokens=10, seed=i)
                for i, p in enumerate(["ROMEO:", "JULIET:"])]
    blocks = zip(["ROMEO:", "JULIET:"], expected, strict=True)
    assert out == "".join(f"> {p}\n{e}\n\n" for p, e in blocks)


def test_piped_chat_as_json_lines(tiny_run: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello, who are you?\nWhat news?\n"))
    out = _run(["chat", "--ckpt", str(tiny_run), "--max-new-tokens", "10", "--seed", "0",
                "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in rows] == ["Hello, who are you?", "What news?"]
    assert [r["text"] for r in rows] == [
        api.generate(tiny_run, p, max_new_tokens=10, seed=i)
        for i, p in enumerate(["Hello, who are you?", "What news?"])]


def test_chat_dialogue_keeps_the_transcript(tiny_run: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Good morrow.\nWhat news?\n"))
    out = _run(["chat", "--ckpt", str(tiny_run), "--speaker", "MENENIUS", "--you",
                "First Citizen", "--max-new-tokens", "40", "--seed", "0"], capsys)
    assert out.count("MENENIUS:\n") == 2


def test_sample_interactive_is_chat(tiny_run: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("ROMEO:\n"))
    out = _run(["sample", "--interactive", "--ckpt", str(tiny_run), "--max-new-tokens", "8",
                "--seed", "4"], capsys)
    assert out == "> ROMEO:\n" + api.generate(tiny_run, "ROMEO:", max_new_tokens=8, seed=4) + "\n\n"
