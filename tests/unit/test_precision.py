"""The one precision rule, for training (autocast) and for inference (the weights dtype)."""

from __future__ import annotations

import pytest
import torch

from gptscratch.errors import UserError
from gptscratch.runtime import precision
from gptscratch.runtime.precision import choose_precision


def test_precision_policy() -> None:
    cpu = torch.device("cpu")
    assert choose_precision("float32", cpu, 64).dtype == torch.float32
    assert choose_precision("auto", cpu, 64).dtype == torch.float32  # too small to gain
    with pytest.raises(UserError, match="float16 training needs a CUDA GPU"):
        choose_precision("float16", cpu, 64)
    with pytest.raises(UserError, match="unknown dtype"):
        choose_precision("float8", cpu, 64)


def test_precision_policy_on_cuda_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    p = choose_precision("auto", cuda, 768)
    assert p.dtype == torch.bfloat16 and not p.needs_scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    p = choose_precision("auto", cuda, 768)
    assert p.dtype == torch.float16 and p.needs_scaler
    with pytest.raises(UserError, match="cannot do bfloat16"):
        choose_precision("bfloat16", cuda, 768)


def test_inference_casts_weights_only_where_it_is_faster(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    # Training gains from 256 wide (autocast); decoding one token at a time only from 512.
    assert choose_precision("auto", cpu, 256).dtype == torch.bfloat16
    assert choose_precision("auto", cpu, 256, for_inference=True).dtype == torch.float32
    assert choose_precision("auto", cpu, 768, for_inference=True).dtype == torch.bfloat16
    with pytest.raises(UserError, match="float16 generation on a CPU"):
        choose_precision("float16", cpu, 768, for_inference=True)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    with pytest.raises(UserError, match="cannot do bfloat16"):
        choose_precision("bfloat16", cpu, 768, for_inference=True)
