"""Nothing of the user's is ever touched: gptscratch writes only into folders it made, refuses
before its first write, and never lets a run's data change under its checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_MODEL, TINY_TRAIN, cli_error

from gptscratch import api
from gptscratch.files import OWNER_MARKER

TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY_MODEL, **TINY_TRAIN}.items()]
USER_NAMES = ["best", "latest", "latest.old", "data", "metrics.jsonl"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture
def users_folder(tmp_path: Path) -> Path:
    """A folder of the user's, holding files and folders named like a run's."""
    folder = tmp_path / "myfiles"
    for name in USER_NAMES:
        if name.endswith(".jsonl"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text('{"mine": true}\n')
        else:
            (folder / name).mkdir(parents=True)
            (folder / name / "notes.txt").write_text(f"my {name} notes")
    return folder


def test_a_users_folder_is_refused_before_anything_is_written(
        users_folder: Path, tiny_corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(users_folder)
    for argv in (["train", "--data", str(tiny_corpus), "--out", str(users_folder), *TINY_FLAGS],
                 ["train", "--out", str(users_folder), "--resume"],
                 ["prepare", "--data", str(tiny_corpus), "--out", str(users_folder)],
                 ["prepare", "--data", str(tiny_corpus), "--out", str(users_folder / "data")]):
        line = cli_error(argv, capsys)
        assert "gptscratch writes only into folders it made" in line, line
    assert snapshot(users_folder) == before  # not a byte changed, nothing added


@pytest.mark.parametrize("name", ["best", "latest.old", "data"])
def test_a_users_entry_inside_a_run_folder_is_refused(
        name: str, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / name, ignore_errors=True)
    (run / name).mkdir()
    (run / name / "notes.txt").write_text("mine")
    before = snapshot(run)
    line = cli_error(["train", "--out", str(run), "--resume", "--max-iters", "40"], capsys)
    assert f"'{run / name}' is not gptscratch's" in line
    assert snapshot(run) == before


def test_resuming_on_other_text_is_refused_before_the_data_is_touched(
        tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "latest" / "checkpoint.json").read_text())
    meta["data_dir"] = str(run / "data")  # the copy's own data
    (run / "latest" / "checkpoint.json").write_text(json.dumps(meta))
    other = tmp_path / "other.txt"
    other.write_text("Completely different text.\n" * 3000)
    before = snapshot(run / "data")
    for argv in (["train", "--out", str(run), "--resume", "--data", str(other)],
                 ["train", "--out", str(run), "--data", str(other), *TINY_FLAGS]):
        line = cli_error(argv, capsys)
        assert "resume" in line and ("--data" in line or "--resume" in line)
    assert snapshot(run / "data") == before


def test_a_fresh_run_starts_its_metrics_anew(tiny_corpus: Path, tmp_path: Path) -> None:
    """A run killed before its first checkpoint leaves metrics.jsonl behind; the next fresh
    run in that folder must not append to it."""
    run = tmp_path / "run"
    api.train("shakespeare-char-gpt2", tiny_corpus, run,
              overrides={**TINY_MODEL, **TINY_TRAIN, "max_iters": 10})
    for name in ("latest", "best"):  # as if killed before any checkpoint
        shutil.rmtree(run / name)
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 99.0}\n' * 3)
    api.train("shakespeare-char-gpt2", tiny_corpus, run,
              overrides={**TINY_MODEL, **TINY_TRAIN, "max_iters": 10})
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r.get("loss") != 99.0 for r in records)
    assert [r["step"] for r in records if "loss" in r] == [5, 10]


def test_a_killed_saves_leftovers_are_cleared(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / ".latest.tmp-abc123").mkdir()  # what SIGKILL in the middle of a save leaves
    (run / ".latest.tmp-abc123" / "model.safetensors").write_bytes(b"half")
    api.train("shakespeare-char-gpt2", None, run, resume=True, overrides={"max_iters": 22})
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [OWNER_MARKER]


class Killed(BaseException):
    """Stands for SIGKILL: whatever was under way stops there."""


def test_a_kill_while_the_old_version_is_deleted_leaves_no_half_checkpoint(
        tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by benchmarks/faults.py: a kill in the middle of deleting `latest.old` left it
    half-deleted under its name, and the run could not be resumed. The old version is now
    renamed to a temporary name first."""
    from gptscratch.checkpoints.checkpoint import load_checkpoint
    from gptscratch.files import atomic_dir

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    step = load_checkpoint(run, "latest").meta["step"]
    rmtree = shutil.rmtree

    def killed_half_way(path: Path, *args: object, **kwargs: object) -> None:
        if "ignore_errors" in kwargs:  # atomic_dir's own cleanup after a failure
            return rmtree(path, *args, **kwargs)
        next(p for p in sorted(Path(path).iterdir()) if p.name == "checkpoint.json").unlink()
        raise Killed

    monkeypatch.setattr(shutil, "rmtree", killed_half_way)
    with pytest.raises(Killed), atomic_dir(run / "latest") as new:  # a save, as checkpoints do
        for f in (run / "latest").iterdir():
            shutil.copyfile(f, new / f.name)
    monkeypatch.undo()
    assert not (run / "latest.old").exists()
    assert load_checkpoint(run, "latest").meta["step"] == step
    result = api.train("shakespeare-char-gpt2", None, run, resume=True, overrides={"max_iters": 22})
    assert result.step == 22
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [OWNER_MARKER]


def test_a_run_folder_from_before_the_marker_is_recognised(
        tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / OWNER_MARKER).unlink()  # as written by an earlier gptscratch
    result = api.train("shakespeare-char-gpt2", None, run, resume=True, overrides={"max_iters": 22})
    assert result.step == 22 and (run / OWNER_MARKER).is_file()
