"""Training: exact resume, atomic checkpoints, schedule, precision policy, optimizer groups."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY_MODEL, TINY_TRAIN

from gptscratch import api
from gptscratch.checkpoints import checkpoint as ckpt_mod
from gptscratch.checkpoints.checkpoint import load_checkpoint, save_checkpoint
from gptscratch.checkpoints.load import load_model
from gptscratch.cli import main
from gptscratch.errors import UserError
from gptscratch.files import OWNER_MARKER
from gptscratch.training.metrics import read_metrics


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_exact_resume_gives_identical_losses(optimizer: str, tmp_path: Path,
                                             tiny_corpus: Path) -> None:
    # Dropout on, so the resumed run must also restore the dropout RNG, not only the batches;
    # with Muon, its momentum buffers too.
    over = {**TINY_MODEL, **TINY_TRAIN, "max_iters": 12, "log_interval": 1, "eval_interval": 100,
            "dropout": 0.1, "grad_accum": 2, "optimizer": optimizer}
    straight, split = tmp_path / "straight", tmp_path / "split"
    api.train("shakespeare-char-gpt2", tiny_corpus, straight, overrides=over)
    api.train("shakespeare-char-gpt2", tiny_corpus, split, overrides=over, stop_at=6)
    assert [s for s, _ in _losses(split)] == list(range(1, 7))
    api.train("shakespeare-char-gpt2", tiny_corpus, split, resume=True)
    assert _losses(straight) == _losses(split)
    assert len(_losses(split)) == 12
    a = load_model(load_checkpoint(straight, "latest")).model.state_dict()
    b = load_model(load_checkpoint(split, "latest")).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_tiny_model_learns_with_muon_through_the_cli(tmp_path: Path,
                                                      tiny_corpus: Path) -> None:
    """`--optimizer muon` end to end: the flags reach the optimizer, the loss falls (measured:
    4.07 at step 1, val 3.37 at step 20, as AdamW's 3.39), and the checkpoint records Muon's
    state for the blocks' matrices."""
    settings = {**TINY_MODEL, **TINY_TRAIN, "log_interval": 1}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_corpus), "--out", str(run), *flags,
                 "--sample-tokens", "0", "--optimizer", "muon",
                 "--muon-lr", "0.02", "--muon-momentum", "0.9"]) == 0
    losses, val = _losses(run), load_checkpoint(run, "latest").meta["val_loss"]
    assert len(losses) == 20 and val < losses[0][1] - 0.5
    ckpt = load_checkpoint(run, "latest")
    assert ckpt.meta["train_config"]["optimizer"] == "muon"
    groups = ckpt.training_state()["optimizer"]["param_groups"]
    assert [g.get("muon", False) for g in groups] == [False, False, True]
    adamw_lr = ckpt.meta["train_config"]["learning_rate"]
    assert groups[2]["momentum"] == 0.9 and groups[2]["lr_scale"] * adamw_lr == pytest.approx(0.02)
    assert len(groups[2]["params"]) == 4 * TINY_MODEL["n_layer"]


def test_resume_can_extend_a_finished_run(tmp_path: Path, tiny_corpus: Path) -> None:
    over = {**TINY_MODEL, **TINY_TRAIN, "max_iters": 4, "eval_interval": 2}
    api.train("shakespeare-char-gpt2", tiny_corpus, tmp_path / "r", overrides=over)
    result = api.train("shakespeare-char-gpt2", None, tmp_path / "r", resume=True,
                       overrides={"max_iters": 6})
    assert result.step == 6


def test_training_twice_into_one_directory_needs_resume(tmp_path: Path, tiny_corpus: Path) -> None:
    over = {**TINY_MODEL, **TINY_TRAIN, "max_iters": 2}
    api.train("shakespeare-char-gpt2", tiny_corpus, tmp_path / "r", overrides=over)
    with pytest.raises(UserError, match="--resume"):
        api.train("shakespeare-char-gpt2", tiny_corpus, tmp_path / "r", overrides=over)


def test_run_directory_layout(tiny_run: Path) -> None:
    for name in ("latest", "best"):
        files = {p.name for p in (tiny_run / name).iterdir()}
        assert files == {"model.safetensors", "checkpoint.json", "tokenizer.json", "state.pt"}
    meta = json.loads((tiny_run / "latest" / "checkpoint.json").read_text())
    assert meta["step"] == 20 and meta["model_config"]["n_layer"] == 2
    state = torch.load(tiny_run / "latest" / "state.pt", weights_only=True)
    assert {"optimizer", "scaler", "data_rng", "torch_rng"} <= set(state)
    records = read_metrics(tiny_run / "metrics.jsonl")
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [10, 20]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] < math.log(65)
    assert not list(tiny_run.glob(".*tmp*"))


def test_checkpoint_has_no_wrapper_prefixes(tmp_path: Path, tiny_run: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_run / "latest" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith(("module.", "_orig_mod.")) for k in keys)


def test_crash_mid_save_leaves_previous_checkpoint(tmp_path: Path, tiny_run: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = load_checkpoint(run, "latest")
    model = load_model(before).model
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(run / "latest", model, before.tokenizer(), before.meta, {"x": 1})
    after = load_checkpoint(run, "latest")
    reloaded = load_model(after).model
    original = load_model(before).model
    assert torch.equal(reloaded.transformer.wte.weight, original.transformer.wte.weight)
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != OWNER_MARKER]


def test_crash_between_renames_falls_back_to_old(tmp_path: Path, tiny_run: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "latest").rename(run / "latest.old")  # the moment between the two renames
    assert load_checkpoint(run, "latest").path == run / "latest.old"


def test_corrupted_and_truncated_checkpoints_are_refused(tmp_path: Path, tiny_run: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    weights = run / "best" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupted"):
        load_checkpoint(run / "best")
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(UserError, match="truncated or corrupted"):
        load_checkpoint(run / "best")


def test_epochs_sets_the_number_of_steps(tmp_path: Path, tiny_corpus: Path) -> None:
    over = {**TINY_MODEL, **TINY_TRAIN, "epochs": 0.1}
    result = api.train("shakespeare-char-gpt2", tiny_corpus, tmp_path / "r", overrides=over)
    tokens = json.loads((tmp_path / "r" / "data" / "meta.json").read_text())["train_tokens"]
    assert result.step == math.ceil(0.1 * tokens / (8 * 32))


def test_evaluate_reports_loss_perplexity_and_bits_per_byte(tiny_run: Path,
                                                            tiny_corpus: Path) -> None:
    own = api.evaluate(tiny_run)
    assert own.perplexity == pytest.approx(math.exp(own.loss))
    assert own.bits_per_byte == pytest.approx(own.loss / math.log(2), rel=1e-3)  # 1 byte/char
    other = api.evaluate(tiny_run, tiny_corpus)
    assert other.tokens == len(tiny_corpus.read_text()) - 1


def test_fp16_grad_scaler_path_trains_and_resumes(tmp_path: Path, tiny_corpus: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA fp16 path (autocast + GradScaler, scaler state in checkpoints), run on CPU."""
    from gptscratch.runtime.precision import Precision
    from gptscratch.training import setup

    fp16 = Precision(torch.float16, "cpu", "test: the CUDA fp16 path on CPU")
    monkeypatch.setattr(setup, "choose_precision", lambda *args: fp16)
    # A given MFU peak: measuring a float16 matmul ceiling on this CPU (no fast fp16) takes
    # minutes.
    over = {**TINY_MODEL, **TINY_TRAIN, "max_iters": 6, "eval_interval": 3, "peak_tflops": 1.0}
    result = api.train("shakespeare-char-gpt2", tiny_corpus, tmp_path / "r", overrides=over,
                       stop_at=3)
    # The scaler ran every step (3 finite steps since its start: no growth, no back-off) and
    # its state was saved...
    scaler = load_checkpoint(tmp_path / "r", "latest").training_state()["scaler"]
    assert (scaler["scale"], scaler["_growth_tracker"]) == (2.0 ** 16, 3)
    result = api.train("shakespeare-char-gpt2", None, tmp_path / "r", resume=True)
    assert result.step == 6 and math.isfinite(result.val_loss)
    final = load_checkpoint(tmp_path / "r", "latest")
    assert final.meta["precision"] == "float16"
    # ...and restored on resume: a new scaler would have counted 3, not 6.
    assert final.training_state()["scaler"]["_growth_tracker"] == 6


def test_an_explicit_length_replaces_the_presets_time_budget(tmp_path: Path,
                                                               tiny_corpus: Path) -> None:
    over = {**TINY_MODEL, **TINY_TRAIN, "max_iters": 3}
    del over["max_time"]
    api.train("shakespeare-char-gpt2", tiny_corpus, tmp_path / "a", overrides=over)
    meta = load_checkpoint(tmp_path / "a", "latest").meta
    assert meta["train_config"]["max_time"] is None and meta["step"] == 3
    api.train("shakespeare-char-gpt2", tiny_corpus, tmp_path / "b",
              overrides={**over, "max_time": 100.0})
    assert load_checkpoint(tmp_path / "b", "latest").meta["train_config"]["max_time"] == 100.0


def test_logged_speed_leaves_out_evaluation_inside_a_window(
        tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps of 40 ms and evaluations of 200 ms every 5 steps, logged every 20 steps: each
    line must report one step per 40 ms, not the speed of the last few steps alone (4x too
    fast) nor one that counts the evaluations (2x too slow)."""
    import time

    from gptscratch.training import loop

    def step(state: Any, lr: float) -> None:
        time.sleep(0.04)
        state.step += 1
        state.window.steps += 1

    def evaluate(state: Any, sample: bool = True) -> None:
        time.sleep(0.2)
        state.saved_step = state.step
        state.val_loss = state.best_val = 1.0

    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(loop, "evaluate_and_save", evaluate)
    over = {**TINY_MODEL, "batch_size": 8, "max_iters": 40, "eval_interval": 5,
            "log_interval": 20, "max_time": 0.0, "dtype": "float32"}
    api.train("shakespeare-char-gpt2", tiny_corpus, tmp_path / "r", overrides=over)
    speeds = [r["tokens_per_s"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl")]
    expected = 8 * 32 / 0.04  # tokens per step / seconds per step
    assert len(speeds) == 2
    assert all(0.8 * expected < s < 1.05 * expected for s in speeds), (speeds, expected)


def _stub_steps(monkeypatch: pytest.MonkeyPatch, seconds: float) -> list[int]:
    """Steps of `seconds` that change nothing, and evaluations that only record their step."""
    import time

    from gptscratch.training import loop

    evaluated: list[int] = []

    def step(state: Any, lr: float) -> None:
        time.sleep(seconds)
        state.step += 1
        state.window.steps += 1

    def evaluate(state: Any, sample: bool = True) -> None:
        evaluated.append(state.step)
        state.saved_step = state.step
        state.val_loss = state.best_val = 1.0

    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(loop, "evaluate_and_save", evaluate)
    return evaluated


def test_a_time_budgeted_run_says_how_many_steps_fit_and_evaluates_about_20_times(
        tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Steps of 20 ms and a 2 s budget: about 100 steps fit, far under the 20,000-step cap. The
    log says so after timing the first steps (not "20000 steps"), and the default
    eval_interval (0) spreads about 20 evaluations over them."""
    evaluated = _stub_steps(monkeypatch, 0.02)
    over = {**TINY_MODEL, "batch_size": 8, "max_iters": 20000, "eval_interval": 0,
            "log_interval": 1000, "max_time": 2.0, "dtype": "float32"}
    with caplog.at_level(logging.INFO, logger="gptscratch"):
        api.train("shakespeare-char-gpt2", tiny_corpus, tmp_path / "r", overrides=over)
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "training for 0:00:02 (or 20,000 steps if they come first" in said
    assert "training for 20000 steps" not in said
    planned = re.search(r"steps 2-11\), about ([\d,]+) steps fit in the 0:00:02 budget "
                        r"\(the cap is 20,000\); evaluating every (\d+) steps", said)
    assert planned, said
    fit, every = int(planned[1].replace(",", "")), int(planned[2])
    assert 50 <= fit <= 100 and every == round(fit / 20)
    assert 12 <= len(evaluated) <= 21, evaluated
    assert re.search(rf"{len(evaluated)} evaluations took [\d.]+ s of this run's", said)


def test_a_run_of_set_length_evaluates_about_20_times(
        tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluated = _stub_steps(monkeypatch, 0.0)
    over = {**TINY_MODEL, "batch_size": 8, "max_iters": 70, "eval_interval": 0,
            "max_time": 0.0, "dtype": "float32"}
    api.train("shakespeare-char-gpt2", tiny_corpus, tmp_path / "r", overrides=over)
    assert evaluated == list(range(4, 70, 4)) + [70]  # every ceil(70 / 20) = 4 steps, and the end


def test_a_tiny_corpus_run_logs_the_memorisation_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = tmp_path / "small.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 60)  # ~2.6 KB
    over = {**TINY_MODEL, **TINY_TRAIN, "block_size": 16, "max_iters": 4, "warmup_iters": 8}
    with caplog.at_level(logging.WARNING, logger="gptscratch"):
        api.train("shakespeare-char-gpt2", text, tmp_path / "run", overrides=over)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("learn the text by heart" in w for w in warned), warned
    assert any("warm-up (8 steps) is as long as the run (4 steps)" in w for w in warned)


def _nan_loss_at(steps: set[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the loss NaN during the given (1-based) optimizer steps."""
    from gptscratch.model.gpt import lm_loss
    from gptscratch.training import loop

    calls = {"n": 0}

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1  # one call per micro-batch; grad_accum is 1 here
        value = lm_loss(logits, targets)
        return value * float("nan") if calls["n"] in steps else value

    monkeypatch.setattr(loop, "lm_loss", loss)


def test_a_non_finite_step_updates_nothing_and_is_counted(
        tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    _nan_loss_at({5, 6}, monkeypatch)
    over = {**TINY_MODEL, **TINY_TRAIN, "max_iters": 10, "log_interval": 10}
    with caplog.at_level(logging.WARNING, logger="gptscratch"):
        result = api.train("shakespeare-char-gpt2", tiny_corpus, tmp_path / "r", overrides=over)
    assert result.step == 10 and math.isfinite(result.val_loss)
    record = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if "loss" in r][-1]
    assert record["skipped_updates"] == 2 and math.isfinite(record["loss"])
    weights = load_model(load_checkpoint(tmp_path / "r", "latest")).model.state_dict()
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert sum("the update is skipped" in r.getMessage() for r in caplog.records) == 2


def test_a_diverged_run_stops_and_keeps_its_last_good_checkpoint(
        tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from gptscratch.cli import main

    _nan_loss_at(set(range(7, 100)), monkeypatch)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY_MODEL, **TINY_TRAIN}.items()]
    code = main(["train", "--data", str(tiny_corpus), "--out", str(tmp_path / "r"), *flags,
                 "--eval-interval", "4", "--max-bad-steps", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "Traceback" not in "".join(err)
    assert sum("the update is skipped" in line for line in err) == 3
    line = err[-1]
    assert "training diverged: 3 steps in a row (up to step 9)" in line
    assert "(step 8)" in line and "--learning-rate" in line  # skipped steps change nothing
    latest = load_checkpoint(tmp_path / "r", "latest")
    assert latest.meta["step"] == 8
    assert all(torch.isfinite(w).all() for w in load_model(latest).model.state_dict().values())


def test_exact_resume_on_sharded_data_of_many_documents(tmp_path: Path,
                                                        tiny_corpus: Path) -> None:
    """A corpus of many documents in many small shards: batches cross shard ends, and a
    resumed run still matches an uninterrupted one exactly."""
    folder = tmp_path / "docs"
    folder.mkdir()
    scenes = tiny_corpus.read_text(encoding="utf-8").split("\n\n")
    for i in range(0, len(scenes), 8):
        (folder / f"{i:04d}.txt").write_text("\n\n".join(scenes[i:i + 8]), encoding="utf-8")
    data = api.prepare(str(folder), "char", tmp_path / "data", shard_tokens=5_000)
    assert len(data.meta["shards"]["train"]) > 5 and data.meta["val_documents"] >= 1
    assert data.tokenizer.eot_id is not None  # documents to keep apart
    over = {**TINY_MODEL, **TINY_TRAIN, "max_iters": 8, "log_interval": 1,
            "eval_interval": 4, "dropout": 0.1}
    straight, split = tmp_path / "straight", tmp_path / "split"
    api.train("shakespeare-char-gpt2", data.dir, straight, overrides=over)
    api.train("shakespeare-char-gpt2", data.dir, split, overrides=over, stop_at=3)
    api.train("shakespeare-char-gpt2", None, split, resume=True)
    assert _losses(straight) == _losses(split) and len(_losses(split)) == 8
    a = load_model(load_checkpoint(straight, "latest")).model.state_dict()
    b = load_model(load_checkpoint(split, "latest")).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mfu_above_100_percent_is_never_logged_or_stored(
        tmp_path: Path, tiny_corpus: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A peak far below what the machine does (a wrong --peak-tflops) would make MFU over 100 %:
    the run stores null and prints no MFU, and says once which setting is wrong."""
    over = {**TINY_MODEL, **TINY_TRAIN, "max_iters": 6, "log_interval": 2,
            "peak_tflops": 1e-6}
    with caplog.at_level(logging.INFO, logger="gptscratch"):
        api.train("shakespeare-char-gpt2", tiny_corpus, tmp_path / "r", overrides=over)
    records = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if "tokens_per_s" in r]
    assert len(records) == 3 and all(r["mfu"] is None for r in records)
    said = [r.getMessage() for r in caplog.records]
    assert not any("MFU" in line and line.startswith("step") for line in said)
    assert sum("MFU came out above 100 %" in line for line in said) == 1
