"""`benchmarks/gpu_check.py`, the check run wherever a CUDA GPU is lent, tested where there is
none: `--cpu-smoke` runs the same parts at tiny sizes on CPU, in subprocesses as on a GPU, and
must report a number for every figure, with loss curves that reach their thresholds."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
PARTS = {"cuda_tests", "throughput", "loss_curves", "generation"}


def run_check(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cpu_smoke_reports_every_part_with_numbers(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    results = REPO / "benchmarks" / "results" / "gpu_check.json"
    before = results.stat().st_mtime_ns if results.exists() else None
    proc = run_check("--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert (results.stat().st_mtime_ns if results.exists() else None) == before  # not written
    assert report["mode"] == "cpu-smoke" and report["machine"]["torch"] == torch.__version__
    assert report["date"] and "--cpu-smoke" in report["command"]
    parts = report["parts"]
    assert set(parts) == PARTS and all(p["seconds"] >= 0 for p in parts.values())
    assert parts["cuda_tests"]["status"] == "skipped: no CUDA"

    throughput = parts["throughput"]
    assert throughput["status"] == "ok" and throughput["peak_tflops"] > 0
    rows = {r["row"]: r for r in throughput["rows"]}
    expected = ["ours-gpt2-eager", "ours-modern-eager"]
    if importlib.util.find_spec("transformers") is not None:
        expected.append("hf-gpt2-sdpa-eager")
        assert throughput["ratios"]["ours_gpt2_over_hf_eager"] > 0
    for name in expected:
        row = rows[name]
        assert row["status"] == "ok" and row["tokens_per_s"] > 0 and row["ms_per_step"] > 0
        # Against a matmul ceiling measured here: a fraction, or unknown (null) where the
        # ceiling was read in a slow moment and the figure would exceed 100 %.
        assert row["mfu"] is None or 0 < row["mfu"] <= 1
        assert math.isfinite(row["final_loss"])
    # The modern row's recipe really is the modern one: no position table, fewer parameters.
    assert rows["ours-modern-eager"]["params"] < rows["ours-gpt2-eager"]["params"]

    curves = {r["recipe"]: r for r in parts["loss_curves"]["results"]}
    assert parts["loss_curves"]["status"] == "ok" and set(curves) == {"gpt2", "modern"}
    for c in curves.values():
        # Started as the untrained model (its loss computed apart, in fp32 on CPU as here, so
        # exactly), ended below the stated threshold and not below the floor no causal model
        # can beat (less the noise of a 10-step mean).
        assert c["start_loss"] == c["expected_start_loss"] and c["passed"] and "why" not in c
        assert c["floor"] - 0.1 < c["final_loss"] < c["threshold"] < c["first_loss"]
        assert c["threshold"] - c["floor"] == pytest.approx(0.3, abs=1e-3)

    generation = {r["batch"]: r for r in parts["generation"]["results"]}
    assert parts["generation"]["status"] == "ok" and set(generation) == {1, 16}
    assert generation[16]["tokens_per_s"] > generation[1]["tokens_per_s"] > 0  # batching pays
    assert "| throughput | ours-gpt2-eager |" in proc.stdout  # the table was printed


def test_a_part_out_of_time_is_recorded_and_the_rest_still_reported(tmp_path: Path) -> None:
    """A one-second budget leaves no time for any part: each says so, the JSON is still
    written, and the exit status says the check failed."""
    out = tmp_path / "check.json"
    proc = run_check("--out", str(out), "--budget", "1", timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    parts = json.loads(out.read_text())["parts"]
    assert set(parts) == PARTS
    assert parts["cuda_tests"]["status"] == "skipped: no CUDA"
    for name in ("loss_curves", "generation"):
        assert parts[name]["status"] == "failed: not run, the time budget was spent"
    assert all(r["status"].startswith(("failed: not run", "skipped"))
               for r in parts["throughput"]["rows"])
    assert parts["throughput"]["status"].startswith("failed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_the_wrapper_says_in_one_line_that_there_is_no_gpu() -> None:
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no CUDA GPU visible to PyTorch" in proc.stderr
    assert "--cpu-smoke" in proc.stderr
