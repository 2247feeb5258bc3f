"""The first command that runs a model says which PyTorch build it runs on, once per version;
a CUDA build on a machine without a GPU is pointed at the README's CPU-only install."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from gptscratch.runtime import device
from gptscratch.runtime.device import choose_device


def test_the_build_is_named_once_per_torch_version(private_cache: Path) -> None:
    # private_cache: a machine that never ran gptscratch
    first = device.first_use_notice()
    assert first is not None and first.startswith(f"running on torch {torch.__version__}")
    assert device.first_use_notice() is None  # remembered in the cache folder
    (private_cache / "torch-build.json").write_text('{"torch": "2.0.0"}')
    assert device.first_use_notice() is not None  # a new torch is named again


def test_a_cuda_build_without_a_gpu_is_pointed_at_the_cpu_install(
        private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    notice = device.first_use_notice()
    assert notice is not None and "a CUDA 12.8 build, and no GPU found" in notice
    assert device.README_INSTALL in notice


def test_the_notice_is_logged_where_the_device_is_chosen(
        private_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gptscratch"):
        choose_device("cpu")
        choose_device("cpu")
    notices = [r.getMessage() for r in caplog.records if "running on torch" in r.getMessage()]
    assert len(notices) == 1
