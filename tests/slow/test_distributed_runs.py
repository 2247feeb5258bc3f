"""Multi-process training for real: 2-process torchrun runs (DDP and FSDP, gloo on CPU) whose
loss sequence, checkpoints and resume must match a single process with the same global batch.

The pieces they are built from have fast tests in `unit/test_distributed.py`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, write_conversations
from safetensors import safe_open

from gptscratch import api
from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.checkpoints.load import load_model
from gptscratch.errors import UserError
from gptscratch.training.metrics import read_metrics
from gptscratch.training.optimizer import state_by_name

# GPT-2's architecture with AdamW, as the single-process runs (api.train) are given; the Muon
# tests add --optimizer muon to both.
FLAGS = ["--preset", "shakespeare-char-gpt2",
         "--block-size", "32", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
         "--max-iters", "6", "--eval-interval", "3", "--eval-iters", "2", "--log-interval", "1",
         "--warmup-iters", "2", "--max-time", "0", "--dtype", "float32", "--device", "cpu",
         "--grad-accum", "2", "--sample-tokens", "0", "--no-compile"]
OVERRIDES = dict(TINY_MODEL, max_iters=6, eval_interval=3, eval_iters=2, log_interval=1,
                 warmup_iters=2, max_time=0.0, dtype="float32", device="cpu", grad_accum=2,
                 compile=False)


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "gptscratch", "train", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def records(run: Path, key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in read_metrics(run / "metrics.jsonl") if key in r]


@pytest.fixture(scope="module")
def single_and_ddp(tmp_path_factory: pytest.TempPathFactory,
                   tiny_corpus: Path) -> tuple[Path, Path, str]:
    """The same training twice: one process with batch 8, and 2 ranks with batch 4 each."""
    base = tmp_path_factory.mktemp("ddp")
    api.train("shakespeare-char-gpt2", tiny_corpus, base / "single",
              overrides={**OVERRIDES, "batch_size": 8})
    out = torchrun(2, "--data", str(tiny_corpus), "--out", str(base / "ddp"),
                   "--batch-size", "4", *FLAGS)
    return base / "single", base / "ddp", out.stderr


@pytest.mark.slow
def test_two_ranks_reproduce_the_single_process_run(single_and_ddp: tuple[Path, Path, str]
                                                    ) -> None:
    single, ddp, stderr = single_and_ddp
    losses_1, losses_2 = records(single, "loss"), records(ddp, "loss")
    assert [s for s, _ in losses_2] == list(range(1, 7))
    assert [s for s, _ in losses_1] == [s for s, _ in losses_2]
    assert np.allclose([v for _, v in losses_1], [v for _, v in losses_2], rtol=1e-5, atol=1e-6)
    assert np.allclose([v for _, v in records(single, "val_loss")],
                       [v for _, v in records(ddp, "val_loss")], rtol=1e-5, atol=1e-6)
    # rank 0 alone reports; the global batch is stated.
    assert "2 processes" in stderr and "[rank 1]" not in stderr
    a = load_model(load_checkpoint(single, "latest")).model.state_dict()
    b = load_model(load_checkpoint(ddp, "latest")).model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.slow
def test_ddp_checkpoint_has_plain_names_and_loads_in_one_process(
        single_and_ddp: tuple[Path, Path, str]) -> None:
    _, ddp, _ = single_and_ddp
    with safe_open(str(ddp / "latest" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and not [n for n in names if n.startswith(("module.", "_orig_mod."))]
    assert load_checkpoint(ddp, "latest").meta["world_size"] == 2
    text = api.generate(ddp, "\n", max_new_tokens=10, seed=0)
    assert len(text) > 0


@pytest.mark.slow
def test_ddp_resume_is_exact_and_other_world_sizes_are_told(
        single_and_ddp: tuple[Path, Path, str], tmp_path: Path, tiny_corpus: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    _, ddp, _ = single_and_ddp
    split = tmp_path / "split"
    torchrun(2, "--data", str(tiny_corpus), "--out", str(split), "--batch-size", "4", *FLAGS,
             "--stop-at", "3")
    torchrun(2, "--out", str(split), "--resume", "--sample-tokens", "0")
    assert records(split, "loss") == records(ddp, "loss")
    # The same checkpoint continued by one process: it works and says what changes.
    with caplog.at_level(logging.WARNING, logger="gptscratch"):
        result = api.train("shakespeare-char-gpt2", None, split, resume=True,
                           overrides={"max_iters": 8})
    assert result.step == 8
    assert "trained with 2 process(es) and now has 1" in caplog.text


@pytest.mark.slow
def test_ddp_resume_with_dropout_is_exact(tmp_path: Path, tiny_corpus: Path) -> None:
    """With dropout each rank draws its own masks: a resumed run must give every rank back its
    own random state (a lost or swapped one changes the losses after step 3)."""
    flags = ["--data", str(tiny_corpus), "--batch-size", "4", "--dropout", "0.2", *FLAGS]
    torchrun(2, "--out", str(tmp_path / "whole"), *flags)
    torchrun(2, "--out", str(tmp_path / "split"), *flags, "--stop-at", "3")
    torchrun(2, "--out", str(tmp_path / "split"), "--resume", "--sample-tokens", "0")
    whole, split = records(tmp_path / "whole", "loss"), records(tmp_path / "split", "loss")
    assert [s for s, _ in split] == list(range(1, 7)) and split == whole
    assert records(tmp_path / "split", "val_loss") == records(tmp_path / "whole", "val_loss")


@pytest.mark.slow
def test_time_budget_stops_all_ranks_at_the_same_step(tmp_path: Path, tiny_corpus: Path) -> None:
    # Ranks follow rank 0's clock: were they to decide alone, one could stop a step early and
    # leave the other waiting in an all-reduce forever (the subprocess timeout would catch it).
    flags = [f for f in FLAGS]
    flags[flags.index("--max-time") + 1] = "4"
    flags[flags.index("--max-iters") + 1] = "100000"
    flags[flags.index("--eval-interval") + 1] = "100000"
    out = torchrun(2, "--data", str(tiny_corpus), "--out", str(tmp_path / "r"),
                   "--batch-size", "4", *flags)
    assert "time budget of 0:00:04 reached" in out.stderr
    meta = load_checkpoint(tmp_path / "r", "latest").meta
    assert 0 < meta["step"] < 100000


@pytest.mark.slow
def test_lora_under_ddp_reproduces_the_single_process_run(
        single_and_ddp: tuple[Path, Path, str], tmp_path: Path, tiny_corpus: Path) -> None:
    """LoRA adapters on a frozen model, 2 ranks x batch 4 against 1 process x batch 8: the same
    losses and the same adapters (DDP reduces only the trainable adapters' gradients)."""
    base, _, _ = single_and_ddp
    lora = ["--lora-rank", "4", "--lora-targets", "attn,mlp", "--learning-rate", "1e-2"]
    api.train(init_from=base, data=tiny_corpus, out_dir=tmp_path / "one",
              overrides={**OVERRIDES, "batch_size": 8, "lora_rank": 4,
                         "lora_targets": "attn,mlp", "learning_rate": 1e-2})
    torchrun(2, "--init-from", str(base), "--data", str(tiny_corpus), "--out",
             str(tmp_path / "two"), "--batch-size", "4", *FLAGS, *lora)
    one, two = records(tmp_path / "one", "loss"), records(tmp_path / "two", "loss")
    assert [s for s, _ in two] == list(range(1, 7)) == [s for s, _ in one]
    assert np.allclose([v for _, v in one], [v for _, v in two], rtol=1e-5, atol=1e-6)
    with safe_open(str(tmp_path / "two" / "latest" / "model.safetensors"), "pt") as f:
        adapters = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    with safe_open(str(tmp_path / "one" / "latest" / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(adapters)
        assert all(torch.allclose(f.get_tensor(k), adapters[k], atol=1e-5) for k in adapters)


@pytest.mark.slow
def test_sft_under_ddp_reproduces_the_single_process_run(
        single_and_ddp: tuple[Path, Path, str], tmp_path: Path) -> None:
    """Chat fine-tuning, 2 ranks x batch 4 against 1 process x batch 8: the masked loss is the
    mean over the step's answer tokens, however the ranks' rows share them."""
    base, _, _ = single_and_ddp
    chat = write_conversations(tmp_path / "chat.jsonl")
    api.train(init_from=base, data=chat, out_dir=tmp_path / "one", sft=True,
              overrides={**OVERRIDES, "batch_size": 8})
    torchrun(2, "--sft", "--init-from", str(base), "--data", str(chat), "--out",
             str(tmp_path / "two"), "--batch-size", "4", *FLAGS)
    for key, steps in (("loss", [1, 2, 3, 4, 5, 6]), ("val_loss", [3, 6])):
        one, two = records(tmp_path / "one", key), records(tmp_path / "two", key)
        assert [s for s, _ in two] == [s for s, _ in one] == steps
        assert np.allclose([v for _, v in one], [v for _, v in two], rtol=1e-5, atol=1e-6)


# --- FSDP ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    run = tmp_path_factory.mktemp("fsdp") / "fsdp"
    torchrun(2, "--data", str(tiny_corpus), "--out", str(run), "--batch-size", "4", *FLAGS,
             "--fsdp")
    return run


@pytest.mark.slow
def test_fsdp_reproduces_the_single_process_run_and_writes_plain_checkpoints(
        single_and_ddp: tuple[Path, Path, str], fsdp_run: Path) -> None:
    single, _, _ = single_and_ddp
    assert [s for s, _ in records(fsdp_run, "loss")] == list(range(1, 7))
    assert np.allclose([v for _, v in records(single, "loss")],
                       [v for _, v in records(fsdp_run, "loss")], rtol=1e-5, atol=1e-6)
    assert np.allclose([v for _, v in records(single, "val_loss")],
                       [v for _, v in records(fsdp_run, "val_loss")], rtol=1e-5, atol=1e-6)
    # Rank 0 gathered the shards: the same file a single process writes.
    with safe_open(str(fsdp_run / "latest" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    a = load_model(load_checkpoint(single, "latest")).model.state_dict()
    b = load_model(load_checkpoint(fsdp_run, "latest")).model.state_dict()
    assert names and not [n for n in names if n.startswith(("module.", "_orig_mod."))]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    optimizer_state = torch.load(fsdp_run / "latest" / "state.pt", weights_only=False)["optimizer"]
    assert "transformer.h.1.mlp.c_fc.weight" in optimizer_state["state"]


@pytest.mark.slow
def test_fsdp_resume_is_exact_and_moves_between_fsdp_ddp_and_one_process(
        single_and_ddp: tuple[Path, Path, str], fsdp_run: Path, tmp_path: Path,
        tiny_corpus: Path) -> None:
    split = tmp_path / "split"
    torchrun(2, "--data", str(tiny_corpus), "--out", str(split), "--batch-size", "4", *FLAGS,
             "--fsdp", "--stop-at", "3")
    torchrun(2, "--out", str(split), "--resume", "--sample-tokens", "0")  # fsdp is kept
    assert records(split, "loss") == records(fsdp_run, "loss")
    # A DDP checkpoint continues under FSDP exactly as under DDP (optimizer state included).
    _, ddp, _ = single_and_ddp
    for mode in ("ddp", "fsdp"):
        shutil.copytree(ddp, tmp_path / mode)
        torchrun(2, "--out", str(tmp_path / mode), "--resume", "--max-iters", "8",
                 "--sample-tokens", "0", *(["--fsdp"] if mode == "fsdp" else []))
    assert np.allclose([v for _, v in records(tmp_path / "ddp", "loss")],
                       [v for _, v in records(tmp_path / "fsdp", "loss")], rtol=1e-5, atol=1e-6)
    # One process continues an FSDP run when told to drop the sharding.
    with pytest.raises(UserError, match="--no-fsdp"):
        api.train("shakespeare-char-gpt2", None, split, resume=True, overrides={"max_iters": 8})
    result = api.train("shakespeare-char-gpt2", None, split, resume=True,
                       overrides={"max_iters": 8, "fsdp": False})
    assert result.step == 8


# --- Muon ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def muon_runs(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> dict[str, Path]:
    """`--optimizer muon` three ways: one process with batch 8; DDP and FSDP with 2 ranks of
    batch 4 (under FSDP each rank gathers every matrix to orthogonalise it, `muon.py`)."""
    base = tmp_path_factory.mktemp("muon")
    api.train("shakespeare-char-gpt2", tiny_corpus, base / "single",
              overrides={**OVERRIDES, "batch_size": 8, "optimizer": "muon"})
    for mode in ("ddp", "fsdp"):
        torchrun(2, "--data", str(tiny_corpus), "--out", str(base / mode), "--batch-size", "4",
                 *FLAGS, "--optimizer", "muon", *(["--fsdp"] if mode == "fsdp" else []))
    return {"single": base / "single", "ddp": base / "ddp", "fsdp": base / "fsdp"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_muon_on_two_ranks_reproduces_the_single_process_run(muon_runs: dict[str, Path],
                                                             mode: str) -> None:
    single, two = muon_runs["single"], muon_runs[mode]
    assert [s for s, _ in records(two, "loss")] == list(range(1, 7))
    assert np.allclose([v for _, v in records(single, "loss")],
                       [v for _, v in records(two, "loss")], rtol=1e-5, atol=1e-6)
    assert np.allclose([v for _, v in records(single, "val_loss")],
                       [v for _, v in records(two, "val_loss")], rtol=1e-5, atol=1e-6)
    a = load_model(load_checkpoint(single, "latest")).model.state_dict()
    b = load_model(load_checkpoint(two, "latest")).model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # The momentum buffers too: under FSDP gathered from the ranks' shards, keyed by name.
    one_state = torch.load(single / "latest" / "state.pt", weights_only=True)["optimizer"]
    two_state = torch.load(two / "latest" / "state.pt", weights_only=True)["optimizer"]
    model = load_model(load_checkpoint(single, "latest")).model
    one = state_by_name(one_state, model)
    two = state_by_name(two_state, model) if mode == "ddp" else two_state  # FSDP: by name
    name = "transformer.h.1.mlp.c_fc.weight"
    assert two["param_groups"][2]["muon"] and name in two["param_groups"][2]["params"]
    assert torch.allclose(one["state"][name]["momentum_buffer"],
                          two["state"][name]["momentum_buffer"], atol=1e-6)


@pytest.mark.slow
def test_muon_fsdp_resume_is_exact(muon_runs: dict[str, Path], tmp_path: Path,
                                   tiny_corpus: Path) -> None:
    split = tmp_path / "split"
    torchrun(2, "--data", str(tiny_corpus), "--out", str(split), "--batch-size", "4", *FLAGS,
             "--optimizer", "muon", "--fsdp", "--stop-at", "3")
    torchrun(2, "--out", str(split), "--resume", "--sample-tokens", "0")  # muon, fsdp kept
    assert records(split, "loss") == records(muon_runs["fsdp"], "loss")
