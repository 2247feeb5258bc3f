"""Every bad input gets one line, `error: ...`, exit code 2, no traceback and no partial files."""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, cli_error

from gptscratch.cli import main
from gptscratch.cli.parser import build_parser
from gptscratch.runtime import precision

TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()] + [
    "--max-iters=2", "--eval-iters=1", "--dtype=float32", "--max-time=0", "--batch-size=4"]


@pytest.fixture(autouse=True)
def _no_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


run_cli = cli_error  # one line on stderr, `error: ...`, exit code 2


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 10)
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be.\n" * 40)
    return {"empty": empty, "latin1": latin1, "short": short}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "not found"),
        ("empty", "empty"),
        ("latin1", "UTF-8"),
    ],
)
def test_bad_text_inputs(case: str, expected: str, files: dict[str, Path], tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    source = str(files.get(case, tmp_path / "nope.txt"))
    out = tmp_path / "prepared"
    line = run_cli(["prepare", "--data", source, "--out", str(out)], capsys)
    assert expected in line
    assert not out.exists() or not any(out.iterdir())
    run_dir = tmp_path / "run"
    line = run_cli(["train", "--data", source, "--out", str(run_dir), *TINY_FLAGS], capsys)
    assert expected in line
    assert not run_dir.exists()  # not even an empty run folder is left behind


def test_corpus_shorter_than_a_block(files: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    line = run_cli(["train", "--data", str(files["short"]), "--out", str(tmp_path / "r"),
                    *TINY_FLAGS, "--block-size=2048"], capsys)
    assert "fewer than one block" in line and "--block-size" in line
    assert not (tmp_path / "r" / "latest").exists()


# Errors that only a machine without a CUDA GPU gives: on a GPU machine they skip, and
# benchmarks/gpu_check.py (which runs the tests marked `cuda`) never selects them.
NEEDS_NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")

@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--preset", "gpt5"], "unknown preset 'gpt5'; choose one of shakespeare-char"),
        (["prepare", "--tokenizer", "word"], "word"),
        (["train", "--tokenizer", "bpe:abc"], "bpe"),
        (["train", "--dtype", "float8"], "unknown dtype 'float8'"),
        (["train", "--n-embd", "100", "--n-head", "3"],
         "n_embd (100) must be divisible by n_head (3); try --n-embd 102"),
        pytest.param(["train", "--dtype", "float16"], "float16 training needs a CUDA GPU",
                     marks=NEEDS_NO_CUDA),
        pytest.param(["train", "--device", "cuda"], "no CUDA GPU", marks=NEEDS_NO_CUDA),
    ],
)
def test_bad_settings(args: list[str], expected: str, files: dict[str, Path], tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--data", str(files["short"])]
    out = ["--out", str(tmp_path / "o")]
    extra = [*TINY_FLAGS, "--block-size=8"] if args[0] == "train" else []
    line = run_cli([args[0], *base, *out, *extra, *args[1:]], capsys)  # the bad flag comes last
    assert expected in line
    assert not (tmp_path / "o" / "latest").exists()


def test_bf16_on_a_cpu_without_it(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path],
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    line = run_cli(["train", "--data", str(files["short"]), "--out", str(tmp_path / "o"),
                    *TINY_FLAGS, "--block-size=8", "--dtype", "bfloat16"], capsys)
    assert "cannot do bfloat16" in line


def test_checkpoint_errors(tiny_run: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    line = run_cli(["sample", "--ckpt", str(tmp_path / "none")], capsys)
    assert "not found" in line
    (tmp_path / "emptydir").mkdir()
    line = run_cli(["eval", "--ckpt", str(tmp_path / "emptydir")], capsys)
    assert "no checkpoint" in line
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    weights = run / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    line = run_cli(["sample", "--ckpt", str(run / "best")], capsys)
    assert "truncated or corrupted" in line
    (run / "latest" / "checkpoint.json").write_text("{not json")
    line = run_cli(["eval", "--ckpt", str(run / "latest")], capsys)
    assert "corrupted" in line


def test_a_misspelt_run_folder_gets_the_nearest_run(tiny_run: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`--ckpt out/shakespeare_char` names `out/shakespeare-char`: the nearest folder beside it
    that holds a checkpoint, never a nearer one that holds none."""
    shutil.copytree(tiny_run, tmp_path / "shakespeare-char")
    (tmp_path / "shakespeare-chars").mkdir()  # closer, but no checkpoint in it
    line = run_cli(["sample", "--ckpt", str(tmp_path / "shakespeare_char")], capsys)
    assert f"not found (did you mean {tmp_path / 'shakespeare-char'}?)" in line
    line = run_cli(["sample", "--ckpt", str(tmp_path / "something-else")], capsys)
    assert "did you mean" not in line


def test_resume_with_a_different_model(tiny_run: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    line = run_cli(["train", "--out", str(run), "--resume", "--n-layer", "3"], capsys)
    assert "n_layer=3" in line and "drop the model overrides" in line


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--temperature", "-0.5"], "temperature (-0.5) must be >= 0"),
        (["--top-k", "0"], "top_k (0) must be >= 1"),
        (["--top-p", "0"], "top_p (0.0) must be in (0, 1]"),
        (["--top-p", "1.5"], "top_p (1.5) must be in (0, 1]"),
        (["--prompt", "ROMEO€ and ✓"], "'€'"),
        (["--stop", ""], "stop string is empty"),
        (["--beams", "0"], "beams (0) must be >= 1"),
        (["--repetition-penalty", "0"], "repetition_penalty (0.0) must be in (0, 10]"),
        (["--frequency-penalty", "3"], "frequency_penalty (3.0) must be in [-2, 2]"),
        (["--presence-penalty", "-2.5"], "presence_penalty (-2.5) must be in [-2, 2]"),
        (["--min-p", "1.5"], "min_p (1.5) must be in [0, 1]"),
        (["--length-penalty", "50", "--beams", "2"], "length_penalty (50.0)"),
        (["--max-new-tokens", "-1"], "max_new_tokens (-1) must be >= 0; try --max-new-tokens 200"),
        (["--num-samples", "2", "--beams", "1", "--seed", "1", "--speaker", "NOBODY"],
         "speaker 'NOBODY' is not in the training corpus; its speakers include "),
        (["--num-samples", "3000000000"], "GiB for generation"),
        (["--num-samples", "3", "--beams", "2"], "num_samples (3) must be <= beams (2)"),
        (["--dtype", "float16"], "float16 generation on a CPU"),
        (["--block-size", "0"], "block_size (0) must be >= 1; try --block-size"),
        (["--block-size", "100000"], "is longer than the 32 positions this model learned"),
    ],
)
def test_bad_sampling_input(flags: list[str], expected: str, tiny_run: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    line = run_cli(["sample", "--ckpt", str(tiny_run), "--max-new-tokens", "5", *flags], capsys)
    assert expected in line


@pytest.mark.parametrize("command", ["chat", "serve"])
def test_chat_and_serve_refuse_a_context_that_learned_positions_cannot_read(
        command: str, tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_cli([command, "--ckpt", str(tiny_run), "--block-size", "33"], capsys)
    assert "block_size (33) is longer than the 32 positions" in line


def test_chat_you_needs_a_speaker(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_cli(["chat", "--ckpt", str(tiny_run), "--you", "ROMEO"], capsys)
    assert "--you needs --speaker" in line


def test_unknown_speaker_lists_the_corpus_speakers(tiny_run: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    line = run_cli(["sample", "--ckpt", str(tiny_run), "--speaker", "Hamlet"], capsys)
    assert "MENENIUS" in line and "First Citizen" in line
    assert capsys.readouterr().out == ""


def test_unseen_prompt_characters_are_named(tiny_run: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    line = run_cli(["sample", "--ckpt", str(tiny_run), "--prompt", "naïve €"], capsys)
    assert "'ï'" in line and "'€'" in line
    assert capsys.readouterr().out == ""  # nothing printed before the error


def test_hub_dataset_offline_fails_fast(tmp_path: Path, unreachable_hub: list[tuple[str, int]],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    line = run_cli(["prepare", "--hf-dataset", "roneneldan/TinyStories", "--out",
                    str(tmp_path / "o")], capsys)
    assert time.perf_counter() - start < 5
    assert unreachable_hub == [("127.0.0.1", 9)]  # found out by the probe, not by retries
    assert "roneneldan/TinyStories" in line and "offline" in line
    assert not (tmp_path / "o").exists()


def test_real_process_exit_code_and_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gptscratch", "train", "--preset", "nope", "--out",
         str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown preset 'nope'; choose one of shakespeare-char, shakespeare-char-gpt2, "
        "shakespeare-char-modern, shakespeare-bpe, gpt2-small"]


@pytest.mark.parametrize(("argv", "hint"), [
    (["trian"], "(did you mean train?)"),
    (["viz", "atention", "--ckpt", "x", "--prompt", "y"], "(did you mean attention?)"),
])
def test_a_misspelt_command_or_picture_gets_a_suggestion(
        argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert hint in capsys.readouterr().err


def _commands() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """Every command line prefix (`sample`, `viz attention`, ...) with its parser."""
    found = []

    def walk(prefix: list[str], parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if prefix and not subs:
            found.append((prefix, parser))
        for action in subs:
            for name, child in action.choices.items():
                walk([*prefix, name], child)

    walk([], build_parser())
    return found


@pytest.mark.parametrize(("command", "parser"), _commands(),
                         ids=lambda c: " ".join(c) if isinstance(c, list) else "")
def test_a_misspelt_flag_of_any_command_gets_its_closest_flag(
        command: list[str], parser: argparse.ArgumentParser,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Each long flag of each command, typed with a middle letter doubled, is suggested back,
    with the command's own --help (its required arguments given)."""
    flags = [f for f in parser._option_string_actions if f.startswith("--") and f != "--help"]
    required = [arg for a in parser._actions if a.required
                for arg in ([a.option_strings[0], "x"] if a.option_strings else ["x"])]
    assert flags
    for flag in flags:
        middle = 2 + (len(flag) - 2) // 2
        typo = flag[:middle] + flag[middle] + flag[middle:]
        with pytest.raises(SystemExit) as exit_info:
            main([*command, *required, typo, "1"])
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines == [f"error: unrecognized arguments: {typo} 1 "
                         f"(did you mean {flag}?); see 'gptscratch {' '.join(command)} --help'"]


@pytest.mark.parametrize(("argv", "expected"), [
    (["sample", "--ckpt", "x", "--temp", "0.8"],
     "--temp 0.8 (flags are not abbreviated: did you mean --temperature?)"),
    (["sample", "--ckpt", "x", "--top", "5"],
     "--top 5 (flags are not abbreviated: did you mean --top-k or --top-p?)"),
    (["sample", "--ckpt", "x", "--temprature=0.8"],
     "--temprature=0.8 (did you mean --temperature?)"),
    (["train", "--max-tim", "3"],
     "--max-tim 3 (flags are not abbreviated: did you mean --max-time?)"),
])
def test_abbreviated_flags_are_refused(argv: list[str], expected: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`--temp` is not taken as `--temperature`: a flag added later (say `--temp-dir`) must
    never change what an existing command line means."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: unrecognized arguments: {expected}; "
                     f"see 'gptscratch {argv[0]} --help'"]


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "--preset", "shakespear-char"],
     "unknown preset 'shakespear-char' (did you mean shakespeare-char?)"),
    (["prepare", "--tokenizer", "gtp2"], "unknown tokenizer 'gtp2' (did you mean gpt2?)"),
])
def test_a_misspelt_preset_or_tokenizer_gets_a_suggestion(
        argv: list[str], expected: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    line = run_cli([*argv, "--out", str(tmp_path / "o")], capsys)
    assert expected in line


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "--batch-size", "x"], "argument --batch-size: invalid int value: 'x'"),
    (["train", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
    (["sample"], "the following arguments are required: --ckpt"),
    (["viz"], "the following arguments are required: PICTURE"),
])
def test_argument_errors_are_one_line_with_the_help_hint(
        argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines
    assert lines[0].endswith("--help'")


def test_a_second_signal_inside_torch_save_exits_as_interrupted(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """torch.save calls our file's write from C++, which turns the `Interrupted` a second
    signal raises there into a RuntimeError: the CLI still exits 143 with the one line."""
    import torch

    from gptscratch.cli import commands
    from gptscratch.errors import Interrupted

    class Signalled(io.BytesIO):
        """The signal arrives during the third write; the writes after it go on."""

        calls = 0

        def write(self, data: object) -> int:
            self.calls += 1
            if self.calls == 3:
                raise Interrupted(15, "SIGTERM again: stopped at once")
            return super().write(data)  # type: ignore[arg-type]

    def train(args: object) -> None:
        torch.save({"w": torch.zeros(1000)}, Signalled())

    with pytest.raises(RuntimeError):  # what torch really raises, not our exception
        train(None)
    monkeypatch.setitem(commands.COMMANDS, "train", train)
    assert main(["train", "--out", str(tmp_path / "o")]) == 143
    assert capsys.readouterr().err.strip().splitlines() == ["SIGTERM again: stopped at once"]


def _folder_with(tmp_path: Path, name: str, data: bytes) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "good.txt").write_text("A good document.\nIt has two lines.\n")
    (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("bad.txt", "caf\xe9\n".encode("latin-1"),
     r"input file '.*bad.txt' is not valid UTF-8 \(bad byte at byte offset 3\).*"
     r"--skip-bad-files"),
    ("bad.jsonl", b'{"text": "fine"}\n{"text": broken}\n', r".*bad.jsonl:2 is not JSON"),
    ("bad.jsonl", b'{"body": "no text field"}\n',
     r".*bad.jsonl:1 has no 'text' field; its fields are: body \(choose one with "
     r"--text-column\)"),
    ("bad.parquet", b"PAR1 not really", r"'.*bad.parquet' is not a readable parquet file"),
    ("bad.txt.gz", b"not gzip at all", r"cannot read input file '.*bad.txt.gz'"),
])
def test_bad_files_in_a_corpus(name: str, data: bytes, expected: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder_with(tmp_path, name, data)
    out = tmp_path / "prepared"
    line = run_cli(["prepare", "--data", str(folder), "--out", str(out)], capsys)
    assert re.fullmatch(f"error: {expected}.*", line), line
    assert not out.exists()  # nothing left, let alone something that looks prepared


def test_skip_bad_files_skips_them_with_a_warning(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder_with(tmp_path, "bad.txt", "caf\xe9\n".encode("latin-1"))
    (folder / "more.md").write_text("Another good document.\n")
    out = tmp_path / "prepared"
    assert main(["prepare", "--data", str(folder), "--out", str(out), "--skip-bad-files",
                 "--tokenizer", "gpt2"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 file that is not UTF-8" in err and "bad.txt" in err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train_documents"] + meta["val_documents"] == 2


def test_an_empty_corpus_after_filtering(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text('{"text": ""}\n{"text": "   "}\n{"text": null}\n')
    for tokenizer in ("char", "gpt2", "bpe:300"):
        line = run_cli(["prepare", "--data", str(path), "--tokenizer", tokenizer, "--out",
                        str(tmp_path / "out")], capsys)
        assert line == f"error: input file '{path}' is empty; give text with some content"
        assert not (tmp_path / "out").exists()


def test_a_second_signal_while_a_line_is_logged_is_not_swallowed() -> None:
    """Logging's handlers catch every Exception a write raises, print a traceback and carry
    on (found by benchmarks/faults.py: two SIGINTs 5 ms apart): a stop must get through."""
    import logging

    from gptscratch.errors import Interrupted

    class Signalled(io.StringIO):
        def write(self, text: str) -> int:
            raise Interrupted(2, "SIGINT again: stopped at once")

    log = logging.getLogger("gptscratch.test-second-signal")
    log.addHandler(logging.StreamHandler(Signalled()))
    log.propagate = False
    with pytest.raises(Interrupted):
        log.warning("eval at step %d", 31)
