"""Every benchmark script runs: its `--quick` mode (a tiny shape, the repository's own data, one
round) writes a results file that records its provenance and has the fields of the committed
results file that the docs cite. The figures are the benchmarks' business; `gpu_check.py`'s
CPU smoke run has its own test (integration/test_gpu_check.py), and `faults.py`'s report is
checked against its committed results below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

RESULTS = REPO / "benchmarks" / "results"
PROVENANCE = {"date", "machine", "torch", "python", "dtype", "commit", "command"}
# Each script's quick command line, after `--quick --out FILE`.
QUICK: dict[str, list[str]] = {
    "copy_check": [],
    "data_scale": [],
    "generation": ["--shape", "preset", "--dtype", "float32", "--batch", "1"],
    "hf_interop": [],
    "lora": [],
    "quality": [],
    "quantize": [],
    "recipe": ["--rows", "gpt2", "--seeds", "1"],
    "serving": ["--no-124m"],
    "sft": [],
    "sizing": [],
    "startup": [],
    "tasks": [],
    # Ours and HF as shipped, at a small batch. No compiled row (a cold
    # compile is most of a minute here) and no bf16 one: on a CPU without AVX512-BF16 or AMX
    # bf16 is emulated and its matmul ceiling alone takes half a minute.
    "training": ["--repeats", "1", "--batch", "2", "--seq-len", "64", "--rows", "ours-fp32",
                 "hf-fp32-sdpa"],
}


def provenance_of(script: str, result: dict[str, Any]) -> dict[str, Any]:
    """Where each script keeps its provenance (one per run key where runs merge)."""
    if script == "generation":
        return next(iter(result["provenance"].values()))
    if script == "startup":
        return result["current"]["provenance"]
    if script == "recipe":
        return result["runs"][0]["provenance"]
    if script == "training":
        return next(iter(result["shapes"].values()))["provenance"]
    return result["provenance"]


def fields(script: str, result: dict[str, Any]) -> set[str]:
    """The top-level fields a results file holds (startup's: those of its first label's set
    of rows; a quick run's label is `current`). Quantize's serving rows need the benchmark
    corpus (tinyshakespeare), which no test reads: its quick run leaves them out."""
    if script == "startup":
        return set(next(iter(result.values())))
    return set(result) - ({"serving"} if script == "quantize" else set())


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(QUICK))
def test_quick_run_writes_a_results_file(script: str, tmp_path: Path,
                                         shared_cache: Path) -> None:
    out = tmp_path / f"{script}.json"
    env = {**os.environ, "GPTSCRATCH_CACHE": str(shared_cache)}
    proc = subprocess.run([sys.executable, f"benchmarks/{script}.py", "--quick", "--out",
                           str(out), *QUICK[script]], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    found = provenance_of(script, result)
    assert PROVENANCE <= set(found), found
    assert found["machine"]["cores"] >= 1 and found["machine"]["cpu"], found
    assert found["command"].startswith(f"python benchmarks/{script}.py"), found
    committed = json.loads((RESULTS / f"{script}.json").read_text())
    # The committed file may predate provenance, and may hold rows a quick run does not make.
    missing = fields(script, committed) - fields(script, result) - {"provenance"}
    assert not missing, f"{script} --quick wrote no {sorted(missing)}"


def test_the_reliability_report_is_its_committed_results() -> None:
    """docs/reliability.md is exactly what benchmarks/faults.py renders from the committed
    faults.json: the report and its data cannot drift apart."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import faults
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    committed = json.loads((RESULTS / "faults.json").read_text())
    assert (REPO / "docs" / "reliability.md").read_text() == faults.render(committed)
