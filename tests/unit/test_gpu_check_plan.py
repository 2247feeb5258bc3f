"""`benchmarks/gpu_check.py`'s plan, checked without a GPU: the GPU plan's models built and run
at full width on CPU, the loss curves' expected first losses (an untrained model does not
start at ln V), the CUDA tests chosen by marker with "a CUDA GPU is present" skips not counted
as failures, each step's reserved time, `--plan`, and no MFU above 100 % in its JSON."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO

from gptscratch.model.layers import NORM_EPS

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load_gpu_check() -> ModuleType:
    """The script as a module (its children import their siblings; these tests need none)."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


gc = load_gpu_check()


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
def test_the_gpu_loss_curve_model_at_full_width_starts_where_the_plan_expects(
        recipe: str) -> None:
    """One forward of the GPU plan's loss-curve model (6 layers, 384 wide, V 256, T 128) on a
    small batch, in bf16 autocast as on the GPU: its loss is the plan's expected first loss
    within the stated tolerance, so a correct GPU run passes the start check."""
    model = gc.untrained_curve_model(gc.GPU, recipe)
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.block_size) == (6, 6, 384, 256, 128)
    batch = gc.curve_data(gc.GPU)[0, :gc.PROBE_ROWS]  # the run's first batch, its first rows
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        logits = model(batch[:, :-1])
    assert logits.shape == (gc.PROBE_ROWS, 128, 256)
    loss = F.cross_entropy(logits.float().reshape(-1, 256), batch[:, 1:].reshape(-1)).item()
    expected = gc.expected_first_loss(gc.GPU, recipe)
    assert abs(loss - expected) <= gc.START_TOLERANCE and gc.start_ok(loss, expected)
    assert not gc.start_ok(expected + 2 * gc.START_TOLERANCE, expected)


def test_the_modern_recipe_starts_far_above_ln_v_for_a_known_reason() -> None:
    """Why the old check (first loss within 0.5 of ln V) failed a correct run at the GPU size:
    with every branch's projection zero, the final hidden state is the token's own embedding,
    so the logits are softcap(rms_norm(E[x]) E^T), and the input token scores about
    C x 0.02 (its embedding's norm times sqrt(C)) above the rest."""
    model = gc.untrained_curve_model(gc.GPU, "modern")
    batch = gc.curve_data(gc.GPU)[0, :gc.PROBE_ROWS]
    E = model.transformer.wte.weight.detach()  # (V, C), tied to the head
    h = E[batch[:, :-1]]
    h = h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + NORM_EPS)
    raw = h @ E.T  # (B, T, V)
    cap = model.config.logit_softcap
    loss = F.cross_entropy((cap * torch.tanh(raw / cap)).reshape(-1, 256),
                           batch[:, 1:].reshape(-1)).item()
    expected = gc.expected_first_loss(gc.GPU, "modern")
    assert loss == pytest.approx(expected, abs=1e-4)
    own = raw.gather(-1, batch[:, :-1, None]).mean().item()
    assert own == pytest.approx(384 * 0.02, rel=0.05)
    assert expected - math.log(256) > 1.5  # the old rule's 0.5 could never hold


def test_the_loss_curve_child_reports_its_start_and_why_it_failed() -> None:
    """The loss-curve child's own report (the smoke plan, a few steps): its start is the
    expected first loss (both fp32 on CPU, so exactly), and a curve that learned too little
    says so in `why`. The GPU width's start is the test above's."""
    plan = replace(gc.SMOKE, curve_steps=6, curve_batch=4)
    result = gc.train_curve(plan, "modern")
    assert result["expected_start_loss"] == round(gc.expected_first_loss(plan, "modern"), 4)
    assert result["start_loss"] == result["expected_start_loss"]
    assert result["passed"] is False and result["why"].startswith("loss ")
    assert "not the untrained model" not in result["why"]
    report = {"parts": {"cuda_tests": {"status": "skipped: no CUDA"},
                        "throughput": {"status": "ok"}, "generation": {"status": "ok"},
                        "loss_curves": {"status": "failed", "results": [result]}}}
    row = next(line for line in gc.table(report).splitlines() if "| loss_curves | modern |" in line)
    assert f"start {result['start_loss']} (untrained: {result['start_loss']} +- 0.1)" in row
    assert row.endswith(f"| {result['why']} |")


def test_the_cuda_tests_are_chosen_by_marker() -> None:
    """Only the tests marked `cuda` (those that run on a GPU): not test_bad_settings' "needs a
    CUDA GPU" errors, which skip on a GPU, nor the tests that mock CUDA, which `-k cuda` chose
    by their names."""
    command = gc.cuda_tests_command(Path("junit.xml"))
    assert "-k" not in command and command[-3:-1] == ["-m", "cuda and not slow"]
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *gc.CUDA_TESTS], cwd=REPO, capture_output=True, text=True, timeout=120)
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert "tests/unit/test_data_batches.py::test_cuda_batches_match_cpu" in ids
    not_gpu = ("test_bad_settings", "test_cuda_peak_comes_from_the_table",
               "test_cuda_batches_are_pinned_and_copied_without_blocking",
               "test_precision_policy_on_cuda_without_a_gpu",
               "test_a_cuda_build_without_a_gpu_is_pointed_at_the_cpu_install")
    assert not [i for i in ids if any(name in i for name in not_gpu)], ids


def test_a_skip_because_a_cuda_gpu_is_present_is_not_a_failure(tmp_path: Path) -> None:
    """Counted from pytest's own JUnit XML: a skip saying a CUDA GPU is present is right on a
    GPU; any other skip of a GPU test, or no test passing, fails the part."""
    (tmp_path / "test_cases.py").write_text(
        "import pytest\n"
        "def test_runs(): pass\n"
        "@pytest.mark.skipif(True, reason='a CUDA GPU is present')\n"
        "def test_needs_no_gpu(): pass\n"
        "@pytest.mark.skipif(True, reason='needs a CUDA device')\n"
        "def test_needs_a_gpu(): pass\n")
    xml = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "test_cases.py", f"--junitxml={xml}"], cwd=tmp_path, capture_output=True,
                   timeout=120)
    counts = gc.junit_counts(xml)
    assert (counts["passed"], counts["skipped"], counts["skipped_gpu_present"]) == (1, 1, 1)
    assert gc.pytest_problems(counts) == ["1 CUDA tests skipped on a CUDA machine"]
    assert gc.pytest_problems({**counts, "skipped": 0}) == []
    assert gc.pytest_problems({**counts, "skipped": 0, "passed": 0}) == ["no CUDA test passed"]


def test_each_step_keeps_its_reserve_and_gains_what_earlier_steps_left() -> None:
    now = [0.0]
    budget = gc.Budget([("a", 10), ("b", 20), ("c", 30)], clock=lambda: now[0])
    assert budget.left("a") == 10
    now[0] = 4.0  # a took 4 of its 10 s: b may use its own 20 and those 6
    assert budget.left("b") == 26
    now[0] = 30.0  # b used everything it could: c still has its 30
    assert budget.left("c") == 30
    small = gc.Budget([("a", 10), ("b", 20), ("c", 30)], total=6.0, clock=lambda: 0.0)
    assert small.reserved == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert small.left("a") < gc.Budget.MIN_START_S  # --budget 6: nothing starts


def test_the_gpu_plan_fits_one_lease_with_the_compiles_reserved_first() -> None:
    steps = gc.schedule(gc.GPU)
    names = [name for name, _ in steps]
    assert sum(seconds for _, seconds in steps) <= 540  # a 10-minute command, with a margin
    rows = [name for name in names if name.startswith("throughput:") and "flash" not in name]
    assert len(rows) == 6 and all(n.endswith("-compiled") for n in rows[:3])
    assert names.index("generation") < names.index(rows[0])  # cheap parts leave them time
    reserved = dict(steps)
    assert min(reserved[n] for n in rows[:3]) >= 60 > max(reserved[n] for n in rows[3:])
    assert {n for n, _ in gc.schedule(gc.SMOKE)} == {
        "loss_curves", "generation", "throughput:ours-gpt2-eager",
        "throughput:hf-gpt2-sdpa-eager", "throughput:ours-modern-eager"}


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
def test_the_throughput_rows_are_gpt2_small_at_full_width(recipe: str) -> None:
    """The rows' 124M shape, built and run once on CPU (a short sequence): GPT-2 small's
    124,439,808 parameters with GPT-2's recipe (Hugging Face's count), and what --plan says."""
    fields = gc.recipe_model(gc.GPU.train_model, recipe)
    torch.manual_seed(0)
    model = gc.GPT(gc.ModelConfig(**fields))
    n = sum(p.numel() for p in model.parameters())
    assert n == gc.count_params(fields)
    # The modern recipe drops the position table (1,024 x 768) and, with RMSNorm, the 25
    # norms' biases (768 each), and adds QK-norm's query and key gains (64 each) in 12 layers.
    gpt2_small = 124_439_808
    assert n == (gpt2_small if recipe == "gpt2"
                 else gpt2_small - 1024 * 768 - 25 * 768 + 12 * 2 * 64)
    with torch.no_grad():
        logits = model(torch.randint(0, 50257, (1, 16)))
    assert logits.shape == (1, 16, 50257)


def test_plan_prints_every_step_its_reserve_and_the_expected_first_losses() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--plan"], cwd=REPO, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})  # no GPU needed
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    steps = gc.schedule(gc.GPU)
    assert f"{sum(s for _, s in steps):.0f} s reserved in all" in out
    for name, seconds in steps:
        assert f"| {name} | {seconds:.0f} s |" in out
    for recipe in ("gpt2", "modern"):
        assert f"{recipe} {gc.expected_first_loss(gc.GPU, recipe):.4f} +- 0.1" in out


def test_the_check_stores_no_mfu_above_100_percent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A row whose tokens/s would put it above the peak gets MFU null in the JSON and
    "unknown" in the table; one below it gets its fraction."""
    monkeypatch.setattr(gc, "peak_flops", lambda device, dtype: (1e12, "a test peak"))

    def fake_child(spec: str, smoke: bool,
                   limit: float) -> tuple[list[dict[str, Any]], str | None, float]:
        fast = spec.startswith("row:ours-gpt2")  # 2,000 tok/s x 1e9 FLOPs: 200 %
        return [{"tokens_per_s": 2000 if fast else 500, "flops_per_token": 1e9,
                 "ms_per_step": 1.0, "batch": 2, "seq_len": 32, "peak_memory_mb": 1,
                 "first_step_s": 0.1, "final_loss": 3.0}], None, 1.0

    monkeypatch.setattr(gc, "run_child", fake_child)
    part = gc.part_throughput(gc.SMOKE, True, gc.Budget(gc.schedule(gc.SMOKE)))
    rows = {r["row"]: r for r in part["rows"]}
    assert rows["ours-gpt2-eager"]["mfu"] is None
    assert rows["ours-modern-eager"]["mfu"] == 0.5
    report = {"parts": {"cuda_tests": {"status": "skipped: no CUDA"}, "throughput": part,
                        "loss_curves": {"status": "ok"}, "generation": {"status": "ok"}}}
    table = gc.table(report)
    assert "MFU unknown" in table and "MFU 50.0%" in table and "200.0%" not in table
