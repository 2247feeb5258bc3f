"""Fuzzing what gptscratch reads: damaged files, random command lines and any prompt.

Whatever comes in, the answer is exit 0 or 2 (never a traceback), in bounded time, with
nothing written outside the folder the command works in. Hypothesis draws the inputs
(derandomized, so CI sees the same ones every run); the number of examples per input kind
is `FUZZ_EXAMPLES` (default 40; `benchmarks/faults.py` runs more for docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PLAYS, TINY_MODEL, TINY_TRAIN
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gptscratch import api
from gptscratch.cli import main
from gptscratch.cli.parser import build_parser
from gptscratch.errors import UserError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SECONDS_PER_EXAMPLE = 60

json_values = st.recursive(
    # No subnormal floats: gptscratch flushes them to zero process-wide (a CPU speed setting).
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_subnormal=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=10)


@contextlib.contextmanager
def bounded(seconds: int = SECONDS_PER_EXAMPLE) -> Iterator[None]:
    """Fail an example that runs longer than `seconds`: a hang is a bug too."""
    def hang(signum: int, frame: Any) -> None:
        raise AssertionError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(argv: list[str], cwd: Path, stdin: str = "") -> int:
    """`gptscratch ARGV` in-process, in `cwd`: its exit code (a traceback fails the test)."""
    old_cwd, old_stdin = Path.cwd(), sys.stdin
    os.chdir(cwd)
    sys.stdin = io.StringIO(stdin)
    try:
        with bounded(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                code = main(argv)
            except SystemExit as exit_info:  # argparse: a one-line error (tested elsewhere)
                code = exit_info.code if isinstance(exit_info.code, int) else 2
        assert code in (0, 2), err.getvalue()[-500:]
        return code
    finally:
        os.chdir(old_cwd)
        sys.stdin = old_stdin


def mutate(document: dict[str, Any], data: st.DataObject) -> Any:
    """A damaged copy of a JSON document: a value replaced, a key dropped, or garbage."""
    how = data.draw(st.sampled_from(["replace", "drop", "nest", "whole"]))
    doc = json.loads(json.dumps(document))
    if how == "whole":
        return data.draw(json_values)
    target = doc
    if how == "nest":
        nested = [k for k, v in doc.items() if isinstance(v, dict) and v]
        if nested:
            target = doc[data.draw(st.sampled_from(sorted(nested)))]
    key = data.draw(st.sampled_from(sorted(target)))
    if how == "drop":
        del target[key]
    else:
        target[key] = data.draw(json_values)
    return doc


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    return tiny_run


def fuzz_file(copy_from: Path, relative: str, argv: Callable[[Path], list[str]],
              data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(copy_from, copy)
        path = copy / relative
        damaged = mutate(json.loads(path.read_text()), data)
        path.write_text(json.dumps(damaged))
        before = set(Path(tmp).iterdir())
        run_cli(argv(copy), Path(tmp))
        assert set(Path(tmp).iterdir()) == before  # nothing written beside the run


@FUZZ
@given(data=st.data())
def test_a_damaged_checkpoint_json(run: Path, data: st.DataObject) -> None:
    fuzz_file(run, "best/checkpoint.json",
              lambda r: ["sample", "--ckpt", str(r / "best"), "--prompt", "A",
                         "--max-new-tokens", "2"], data)


@FUZZ
@given(data=st.data())
def test_a_damaged_prepared_meta_json(run: Path, data: st.DataObject) -> None:
    fuzz_file(run, "data/meta.json",
              lambda r: ["eval", "--ckpt", str(r), "--data", str(r / "data")], data)


@FUZZ
@given(data=st.data())
def test_a_damaged_tokenizer_json(run: Path, data: st.DataObject) -> None:
    from gptscratch.data.tokenizers import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(json.dumps(mutate(json.loads((run / "data" / "tokenizer.json")
                                                     .read_text()), data)))
        with bounded(), contextlib.suppress(UserError):
            load_tokenizer(path).encode("ROMEO: hello")


def flag_values() -> st.SearchStrategy[str]:
    """Values for any flag: small valid numbers, edge and absurd numbers, words."""
    return st.one_of(st.integers(-3, 8).map(str),
                     st.sampled_from(["0", "-1", "1e12", "4096000000000", "nan", "inf", "-inf",
                                      "0.5", ""]),
                     st.text("abcxyz-_019", max_size=6))


def command_lines(command: str) -> st.SearchStrategy[list[str]]:
    """Random argument lists for a sub-command (`viz next-token`: a picture of viz): its own
    flags with random values, in random order, and stray words."""
    sub = build_parser()
    for name in command.split():
        sub = sub._subparsers._group_actions[0].choices[name]
    flags = sorted(o for a in sub._actions for o in a.option_strings if o.startswith("--"))
    item = st.one_of(st.tuples(st.sampled_from(flags), flag_values()).map(list),
                     st.sampled_from(flags).map(lambda f: [f]), flag_values().map(lambda v: [v]))
    return st.lists(item, max_size=6).map(lambda items: [w for i in items for w in i])


# Appended last (argparse keeps the last of a repeated flag) so that every run is short.
BOUNDS = {
    "train": ["--max-iters", "2", "--max-time", "0", "--eval-iters", "1", "--no-compile",
              "--sample-tokens", "0", "--grad-accum", "1", "--device", "cpu"],
    "sample": ["--max-new-tokens", "3"], "chat": ["--max-new-tokens", "3"],
}


@FUZZ
@given(command=st.sampled_from(["prepare", "train", "sample", "chat", "eval", "explain",
                                "import-hf", "export-hf", "viz curves", "viz attention",
                                "viz next-token", "viz embeddings", "viz logit-lens"]),
       data=st.data())
def test_a_random_command_line(run: Path, command: str, data: st.DataObject) -> None:
    # First what lets the command run (the random flags may override it), then the random
    # flags, then the bounds that keep it short.
    needs = {"train": ["--data", str(PLAYS), "--out", "out"],
             "prepare": ["--data", str(PLAYS), "--out", "prepared"],
             "sample": ["--ckpt", str(run)], "chat": ["--ckpt", str(run)],
             "eval": ["--ckpt", str(run)], "explain": ["--ckpt", str(run), "--prompt", "A"],
             "export-hf": ["--ckpt", str(run), "--out", "hf"],
             "viz curves": ["--runs", str(run), "--out", "c.png"]}
    for picture in ("attention", "next-token", "embeddings", "logit-lens"):
        needs[f"viz {picture}"] = ["--ckpt", str(run), "--prompt", "AB", "--out", "p.png"]
    if command == "viz embeddings":
        needs[command].remove("--prompt")
        needs[command].remove("AB")
    event(command)  # counted per command in --hypothesis-show-statistics
    argv = [*command.split(), *needs.get(command, []), *data.draw(command_lines(command)),
            *BOUNDS.get(command, [])]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        run_cli(argv, work, stdin="Hello there\n")
        assert [p.name for p in Path(tmp).iterdir()] == ["work"]  # nothing outside it


@pytest.fixture(scope="module")
def models(run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model per tokenizer kind."""
    found = {"char": run}
    for spec in ("gpt2", "bpe:300"):
        out = tmp_path_factory.mktemp("tok") / spec.replace(":", "")
        api.train("shakespeare-char-gpt2", PLAYS, out, tokenizer=spec,
                  overrides={**TINY_MODEL, **TINY_TRAIN, "max_iters": 2})
        found[spec] = out
    return found


def prompts(known: list[str]) -> st.SearchStrategy[str]:
    """Any text, and text of the `known` characters (the char model's vocabulary), so that for
    every tokenizer most prompts reach generation rather than a refusal."""
    return st.one_of(st.text(max_size=200), st.text(alphabet=known, max_size=200),
                     st.text(alphabet=known, min_size=1, max_size=3).map(lambda t: t * 20_000),
                     st.text(max_size=3).map(lambda t: t * 20_000))


def test_any_prompt_for_every_tokenizer(models: dict[str, Path]) -> None:
    """Every prompt is generated from, or refused in one line exactly where a refusal is due
    (an empty prompt; for the char model, a character outside its vocabulary); and the test
    counts the prompts that reached generation, so that it cannot pass by refusing."""
    loaded = {kind: api.load(path, "cpu") for kind, path in models.items()}
    chars = loaded["char"].tokenizer
    vocab = {chars.decode([i]) for i in range(chars.vocab_size)}
    reached = Counter[str]()

    @FUZZ
    @given(kind=st.sampled_from(sorted(models)),
           prompt=prompts(sorted(c for c in vocab if len(c) == 1)))
    def one(kind: str, prompt: str) -> None:
        event(kind)
        due = prompt == "" or (kind == "char" and not set(prompt) <= vocab)
        with bounded():
            try:
                done = api.complete(loaded[kind], prompt, max_new_tokens=3, seed=0)
            except UserError as e:
                assert due, f"{kind} refused {prompt[:40]!r}: {e}"
                assert str(e).strip() and "\n" not in str(e)  # one line that says something
                return
        assert not due, f"{kind} took {prompt[:40]!r}"
        assert len(done) == 1 and len(done[0].token_ids) <= 3
        assert done[0].finish_reason in ("length", "stop")
        reached[kind] += 1

    one()
    assert all(reached[kind] >= EXAMPLES // 10 for kind in models), reached


def test_the_harness_fails_on_a_traceback(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above can fail: an exception that is not a user error escapes them."""
    from gptscratch.cli import commands

    def broken(args: Any) -> None:
        raise ValueError("a bug")

    monkeypatch.setitem(commands.COMMANDS, "eval", broken)
    with pytest.raises(ValueError, match="a bug"):
        run_cli(["eval", "--ckpt", str(tmp_path)], tmp_path)
