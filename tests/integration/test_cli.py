"""The CLI's happy paths, run in-process: prepare, train, sample (flags and stdin), eval."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_MODEL, TINY_TRAIN

from gptscratch.cli import main


def test_prepare_a_local_hf_text_dataset(tmp_path: Path, tiny_corpus: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    code = main(["prepare", "--hf-dataset", "text", "--hf-data-files", str(tiny_corpus),
                 "--tokenizer", "gpt2", "--out", str(out), "--val-fraction", "0.2"])
    assert code == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"] == "gpt2" and meta["dtype"] == "uint16"
    assert meta["val_tokens"] > 0.15 * (meta["train_tokens"] + meta["val_tokens"])
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)  # the result: where the data is
    assert "prepared" in captured.err and "train +" in captured.err  # what it holds, once


def test_train_then_sample_and_eval(tmp_path: Path, tiny_corpus: Path,
                                    capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY_MODEL, **TINY_TRAIN}.items()]
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_corpus), "--out", str(run), *flags,
                 "--sample-tokens", "50"]) == 0
    captured = capsys.readouterr()
    assert "parameters" in captured.err and "eval at step 20" in captured.err
    assert "--- a sample from" in captured.out

    assert main(["sample", "--ckpt", str(run), "--prompt", "ROMEO:", "--max-new-tokens", "30",
                 "--seed", "7", "--num-samples", "2", "--top-k", "10", "--top-p", "0.9"]) == 0
    out = capsys.readouterr().out
    first, second = out.split("-" * 40 + "\n")
    assert first.startswith("ROMEO:") and second.startswith("ROMEO:")
    assert len(first) == len("ROMEO:") + 30 + 1  # 30 characters and a newline

    monkeypatch.setattr(sys, "stdin", io.StringIO("JULIET:\n"))
    assert main(["sample", "--ckpt", str(run), "--max-new-tokens", "20", "--seed", "7",
                 "--temperature", "0"]) == 0
    greedy = capsys.readouterr().out
    assert greedy.startswith("JULIET:\n")

    assert main(["eval", "--ckpt", str(run), "-q"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{run / 'best'} (step 20) on the val split of {run / 'data'}")
    assert "| perplexity" in line
    assert main(["eval", "--ckpt", str(run), "--json", "-q"]) == 0  # -q after the command
    result = json.loads(capsys.readouterr().out)
    assert result["loss"] > 0 and result["perplexity"] > 1 and result["bits_per_byte"] > 0


def test_python_dash_m_and_console_script_agree(tmp_path: Path) -> None:
    for cmd in ([sys.executable, "-m", "gptscratch", "--help"],
                [str(Path(sys.executable).parent / "gptscratch"), "--help"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0
        assert "prepare" in proc.stdout and "sample" in proc.stdout
