"""MFU's peak table against the names `torch.cuda.get_device_name()` really returns, and the
rule that an MFU above 100 % is never reported (`mfu.model_flops_utilisation`), in the trainer's
library and in the two benchmark scripts that store MFU."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import REPO

from gptscratch.training import mfu

# Dense bf16 tensor-core TFLOP/s written here from NVIDIA's data sheets (half the sparse
# figure they print), not read from the table under test.
DEVICE_PEAKS = [
    ("NVIDIA H100 80GB HBM3", 989.0),  # how the SXM5 board names itself
    ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H200", 989.0),
    ("NVIDIA H200 NVL", 835.0),
    ("NVIDIA GH200 480GB", 989.0),
    ("NVIDIA L40", 181.0),
    ("NVIDIA L40S", 362.0),
    ("NVIDIA L4", 121.0),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A100-SXM4-40GB", 312.0),
    ("NVIDIA A100 80GB PCIe", 312.0),
    ("NVIDIA A100-PCIE-40GB", 312.0),
    ("NVIDIA A10", 125.0),
    ("NVIDIA GeForce RTX 4090", 165.0),
    ("Tesla V100-SXM2-16GB", 125.0),  # fp16 tensor cores: V100 has no bf16
    ("Tesla T4", 65.0),  # likewise
]


@pytest.mark.parametrize(("device_name", "tflops"), DEVICE_PEAKS)
def test_each_real_device_name_gets_its_own_products_peak(device_name: str,
                                                          tflops: float) -> None:
    assert mfu.gpu_peak_flops(device_name) == tflops * 1e12


@pytest.mark.parametrize("device_name", [
    "NVIDIA GeForce RTX 4090 Laptop GPU",  # another chip than the desktop card
    "NVIDIA GeForce RTX 4090 D",  # fewer cores than the 4090
    "NVIDIA GeForce RTX 4080",
    "NVIDIA B200",
    "Tesla V100S-PCIE-32GB",
    "Some Future Accelerator",
])
def test_a_product_not_in_the_table_has_no_peak(device_name: str) -> None:
    """None, so `peak_flops` measures a matmul ceiling instead of borrowing a neighbour's."""
    assert mfu.gpu_peak_flops(device_name) is None


def test_the_cuda_peak_follows_the_device_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """An H100 NVL gets the NVL figure through `peak_flops`, not the SXM board's 989."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 NVL")
    peak, source = mfu.peak_flops(torch.device("cuda"), torch.bfloat16)
    assert peak == 835e12 and "NVIDIA H100 NVL" in source


def test_mfu_is_model_flops_over_the_peak() -> None:
    # 2,000 tokens/s x 1e9 FLOPs per token = 2e12 FLOP/s, against a 8e12 peak.
    assert mfu.model_flops_utilisation(2000, 1e9, 8e12) == pytest.approx(0.25)
    assert mfu.model_flops_utilisation(8000, 1e9, 8e12) == pytest.approx(1.0)  # at the peak
    assert mfu.model_flops_utilisation(2000, 1e9, 0.0) is None  # no peak to measure against


def test_mfu_above_100_percent_is_unknown_and_said_once(
        caplog: pytest.LogCaptureFixture) -> None:
    peak = 1.234e11  # a peak no other test uses: the warning is given once per peak
    with caplog.at_level(logging.WARNING, logger="gptscratch.training.mfu"):
        assert mfu.model_flops_utilisation(1000, 1.3e8, peak, "a matmul measured here") is None
        assert mfu.model_flops_utilisation(2000, 1.3e8, peak, "a matmul measured here") is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "above 100 %" in warnings[0] and "a matmul measured here" in warnings[0]
    assert "peak_tflops" in warnings[0]  # the setting that fixes it


def test_the_training_benchmark_stores_no_mfu_above_100_percent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/training.py's rows: against a ceiling read too low, MFU is null, as in the
    training.json whose fp32 MFU came out at 138 %."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import training

    run = dict(ms_per_step=100.0, tokens_per_s=10_000, first_step_s=1.0, peak_memory_mb=10,
               process_s=5.0, final_loss=3.0, flops_per_token=1e9, params=10)
    fields = dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=64, bias=True,
                  dropout=0.0)
    # 1e13 model FLOP/s: 50 % of a 2e13 bf16 ceiling, 125 % of an 8e12 fp32 one.
    row = training.aggregate("ours-fp32", [run], fields, {"bf16": 2e13, "fp32": 8e12})
    assert row["mfu_vs_bf16_ceiling"] == 0.5 and row["mfu_vs_fp32_ceiling"] is None
