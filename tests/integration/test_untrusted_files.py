"""Files gptscratch reads back are checked as untrusted: a damaged or hostile checkpoint.json,
meta.json, tokenizer.json, script.json or Hugging Face config.json gives one line and exit 2,
and never makes gptscratch read outside the folder or allocate without bound."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_error

META = "checkpoint.json"


def edit_json(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run whose checkpoints point at the copy's own data."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    for folder in ("best", "latest"):
        edit_json(copy / folder / META, lambda m: m.update(data_dir=str(copy / "data")))
    return copy


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m: m["model_config"].update(vocab_size=-1), "vocab_size (-1) must be a whole"),
    (lambda m: m["model_config"].update(block_size=10**12), "block_size (1000000000000)"),
    (lambda m: m["model_config"].update(n_embd="32"), "n_embd ('32') must be a whole"),
    (lambda m: m["model_config"].update(bias="yes"), "bias ('yes') must be true or false"),
    (lambda m: m.pop("model_config"), "has no vocab_size in its model_config"),
    (lambda m: m["model_config"].pop("n_embd"), "has no n_embd in its model_config"),
    (lambda m: m["files"].update({"../../etc/passwd": "0" * 64}), "'../../etc/passwd'"),
    (lambda m: m["files"].update({"/dev/zero": "0" * 64}), "'/dev/zero'"),
    (lambda m: m.update(files={}), "does not list model.safetensors"),
    (lambda m: m.pop("files"), "is not a gptscratch checkpoint file"),
    (lambda m: m.update(step="ten"), "step = 'ten', not a number"),
    (lambda m: m.update(val_loss=[1]), "val_loss = [1], not a number"),
])
def test_a_damaged_checkpoint_json_is_one_line(change: Any, expected: str, run: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    for folder in ("best", "latest"):
        edit_json(run / folder / META, change)
    for argv in (["sample", "--ckpt", str(run), "--prompt", "A", "--max-new-tokens", "3"],
                 ["eval", "--ckpt", str(run)], ["train", "--out", str(run), "--resume"]):
        assert expected in cli_error(argv, capsys), argv


@pytest.mark.parametrize(("change", "expected"), [
    (lambda m: m.update(dtype="float64"), "wrong type or range"),
    (lambda m: m.update(train_tokens=-5), "wrong type or range"),
    (lambda m: m.update(vocab_size="65"), "wrong type or range"),
    (lambda m: m.pop("tokenizer_fingerprint"), "is damaged"),
    (lambda m: m.update(format_version=99), "format 99"),
])
def test_a_damaged_prepared_meta_json_is_one_line(change: Any, expected: str, run: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    edit_json(run / "data" / "meta.json", change)
    assert expected in cli_error(["eval", "--ckpt", str(run), "--data", str(run / "data")],
                                 capsys)


@pytest.mark.parametrize("content", ['{"kind": "char", "chars": 5}', '{"kind": "bpe"}',
                                     '{"kind": "word"}', "[1, 2]", "{not json"])
def test_a_damaged_tokenizer_json_is_one_line(content: str, run: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from gptscratch.files import sha256_file

    for folder in ("best", "latest"):
        (run / folder / "tokenizer.json").write_text(content)
        edit_json(run / folder / META,  # a file that matches its hash, so it is read
                  lambda m, f=folder: m["files"].update(
                      {"tokenizer.json": sha256_file(run / f / "tokenizer.json")}))
    line = cli_error(["sample", "--ckpt", str(run), "--prompt", "A", "--max-new-tokens", "3"],
                     capsys)
    assert "tokenizer" in line


@pytest.mark.parametrize("content", ['{"style": "prose", "speakers": {}}', "[]", "{bad",
                                     '{"style": "line", "speakers": {"A": "x", "B": 1}}'])
def test_a_damaged_script_json_is_found_again(content: str, run: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from gptscratch.cli import main

    (run / "data" / "script.json").write_text(content)
    assert main(["sample", "--ckpt", str(run), "--prompt", "Hark", "--speaker", "menenius",
                 "--max-new-tokens", "5", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("Hark\n\nMENENIUS:\n")
    assert json.loads((run / "data" / "script.json").read_text())["style"] == "line"


@pytest.mark.parametrize(("change", "expected"), [
    ({"n_layer": "two"}, "n_layer ('two')"),
    ({"layer_norm_epsilon": "small"}, "wrong type"),
    ({"n_positions": 10**12}, "block_size (1000000000000)"),
    ({"vocab_size": -1}, "vocab_size (-1)"),
])
def test_a_damaged_hf_config_json_is_one_line(change: dict[str, Any], expected: str,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from hf_models import make_hf_model

    folder = tmp_path / "hf"
    make_hf_model(folder)
    edit_json(folder / "config.json", lambda c: c.update(change))
    line = cli_error(["import-hf", str(folder), "--out", str(tmp_path / "out")], capsys)
    assert expected in line and not (tmp_path / "out").exists()
