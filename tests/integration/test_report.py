"""`gptscratch report`: one self-contained HTML page comparing runs, checked against what the
runs' own files say (metrics.jsonl's losses and samples, their settings), with no network
reference in it, and one-line refusals of bad runs and outputs."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import TINY_MODEL, TINY_TRAIN, cli_error

from gptscratch import api
from gptscratch.cli import main
from gptscratch.training.metrics import read_metrics


@pytest.fixture(scope="module")
def other_run(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """A second tiny run that differs from `tiny_run` in its learning rate."""
    out = tmp_path_factory.mktemp("other") / "slower"
    api.train("shakespeare-char-gpt2", tiny_corpus, out,
              overrides={**TINY_MODEL, **TINY_TRAIN, "learning_rate": 2e-3,
                         "eval_sample_tokens": 40})
    return out


def final_val_loss(run: Path) -> str:
    evals = [r for r in read_metrics(run / "metrics.jsonl") if "val_loss" in r]
    return f"{evals[-1]['val_loss']:.4f}"


def samples(run: Path) -> list[str]:
    return [r["sample"] for r in read_metrics(run / "metrics.jsonl") if "sample" in r]


def test_report_compares_the_runs(tiny_run: Path, other_run: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert main(["report", "--runs", str(tiny_run), str(other_run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    page = out.read_text(encoding="utf-8")
    for run in (tiny_run, other_run):
        assert html.escape(str(run)) in page
        assert f"<td>{final_val_loss(run)}</td>" in page
        texts = samples(run)
        assert len(texts) == 2  # at steps 10 and 20
        assert all(f"<pre>{html.escape(t)}</pre>" in page for t in texts)
    # Each run's curves and the overlay of training and validation loss, inlined.
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', page)) == 3
    assert re.search(r'<tr class="differs"><th>learning_rate</th><td>0\.004</td>'
                     r'<td>0\.002</td></tr>', page)
    # The settings come last: the differing ones first, those shared folded away.
    settings = page.index("<h2>Settings</h2>")
    assert page.index("learning_rate") > settings > page.rindex("<pre>")
    folded = page.index("<details><summary>")
    assert page.index("learning_rate") < folded < page.index("<th>n_embd</th>")
    assert '<tr><th>n_embd</th><td>32</td><td>32</td></tr>' in page  # equal: not highlighted
    assert "<tr><th>tokens seen</th><td>5,120</td><td>5,120</td></tr>" in page  # 20 x 8 x 32
    assert "<tr><th>steps</th><td>20 (ran its 20 steps)</td>" in page
    assert page.count("Copy check of the last sample") == 2
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.I)
    assert "<script" not in page.lower()


def test_the_summary_says_what_ended_a_run() -> None:
    from gptscratch.viz.report import RunSummary

    timed = RunSummary("a", Path("a"), settings={"max_iters": 20000, "max_time": 270.0},
                       steps=662, wall_time=271.5)
    assert timed.ended_by == "its 0:04:30 time budget ended it; 20,000 steps was only a cap"
    stopped = RunSummary("b", Path("b"), settings={"max_iters": 20000, "max_time": 270.0},
                         steps=300, wall_time=120.0)
    assert stopped.ended_by.startswith("stopped before its end")
    assert RunSummary("c", Path("c"), settings={"max_iters": 50}, steps=50).ended_by == (
        "ran its 50 steps")


def test_run_text_is_escaped_and_gone_data_is_said(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy<b>"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("data"))
    meta_path = run / "latest" / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["data_dir"] = str(tmp_path / "gone")
    meta_path.write_text(json.dumps(meta))
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 21, "sample": "<script>alert(1)</script> & co"}) + "\n")
    page = api.report([run], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "<script" not in page and "copy&lt;b&gt;" in page and "copy<b>" not in page
    assert "Copy check: not available (the training data" in page


def test_bad_runs_and_outputs_are_one_line(tiny_run: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "r.html")
    line = cli_error(["report", "--runs", str(tiny_run), str(tmp_path), "--out", out], capsys)
    assert "is not a gptscratch run folder" in line and not Path(out).exists()
    assert "is a folder" in cli_error(["report", "--runs", str(tiny_run), "--out",
                                       str(tmp_path)], capsys)
    assert "must end in .html" in cli_error(["report", "--runs", str(tiny_run), "--out",
                                             str(tmp_path / "r.txt")], capsys)
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    assert "is not a gptscratch report" in cli_error(
        ["report", "--runs", str(tiny_run), "--out", str(mine)], capsys)
    assert mine.read_text() == "<p>my notes</p>"
    assert main(["report", "--runs", str(tiny_run), "--out", out]) == 0
    assert main(["report", "--runs", str(tiny_run), "--out", out]) == 0  # its own: replaced
