"""`--size auto` (training/sizing.py): the ladder, the rule, the timing and its cache, and how a
run takes the choice (or refuses it) before anything is written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import cli_error

from gptscratch import api
from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.model.config import ModelConfig
from gptscratch.model.gpt import GPT
from gptscratch.runtime.precision import choose_precision
from gptscratch.training import sizing
from gptscratch.training.config import TrainConfig
from gptscratch.training.presets import get_preset

CPU = torch.device("cpu")
TINY = dict(block_size=16, dropout=0.0, bias=False)


def test_ladder_is_depth_layers_of_64_per_layer_and_heads_of_64() -> None:
    assert sizing.shape_of(1) == dict(n_layer=1, n_embd=64, n_head=1)
    assert sizing.shape_of(6) == dict(n_layer=6, n_embd=384, n_head=6)
    model = get_preset("shakespeare-char").model
    config = TrainConfig().replace(batch_size=16, max_time=1e6)  # every rung passes the rule
    choice = sizing.size_model(model, config, 65, CPU, probe=lambda mc: 1.0)
    assert list(choice.params) == list(range(1, len(choice.params) + 1))  # up to the memory
    for depth in (1, 3):  # the rule sees the parameters the run's model has
        built = GPT(ModelConfig(vocab_size=65, **{**model, **sizing.shape_of(depth)}))
        assert choice.params[depth] == built.num_params()


def test_rule_takes_the_ratio_nearest_the_target_on_a_log_scale(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sizing, "TOKENS_PER_PARAM", 2.0)
    params = {1: 100, 2: 1000, 3: 10_000}
    seconds = {1: 1.0, 2: 1.0, 3: 1.0}
    # 10 s x 100 tokens a step = 1,000 tokens: ratios 10, 1, 0.1. log(10/2) > log(2/1): depth 2.
    choice = sizing.choose(10.0, params, seconds, tokens_per_step=100)
    assert choice.depth == 2 and choice.tokens(2) == 1000 and choice.ratio(1) == 10
    # Three times the budget: ratios 30, 3, 0.3: depth 2 still (|log 1.5| < |log 15|).
    assert sizing.choose(30.0, params, seconds, 100).depth == 2
    # A hundred times: ratios 1000, 100, 10: the largest timed, nearest though far off.
    assert sizing.choose(1000.0, params, seconds, 100).depth == 3
    assert "depth 3" in sizing.choose(1000.0, params, seconds, 100).describe()


def test_sizing_times_upwards_and_stops_once_past_the_rule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rungs are timed from depth 1 until one's ratio falls below the rule's; the choice is
    the nearer of the last two; the choice's record has every rung timed."""
    monkeypatch.setattr(sizing, "TOKENS_PER_PARAM", 1.0)
    timed: list[int] = []

    def probe(mc: ModelConfig) -> float:
        timed.append(mc.n_layer)
        return 0.01 * mc.n_layer ** 3

    fields = {**get_preset("shakespeare-char").model, "block_size": 128}
    config = TrainConfig().replace(batch_size=16, max_time=300.0)
    choice = sizing.size_model(fields, config, 65, CPU, probe=probe)
    ratios = [choice.ratio(d) for d in timed]
    assert timed == list(range(1, len(timed) + 1)) and ratios[-1] < 1.0 <= ratios[-2]
    assert choice.depth in timed[-2:]
    assert abs(math.log(choice.ratio(choice.depth))) == min(abs(math.log(r))
                                                           for r in ratios)
    meta = choice.to_meta()
    assert meta["depth"] == choice.depth and set(meta["step_seconds"]) == {str(d) for d in timed}
    # Twice the processes (DDP) see twice the tokens a step: never a smaller model.
    assert sizing.size_model(fields, config, 65, CPU, world_size=2, probe=probe).depth \
        >= choice.depth


def test_a_rung_that_would_not_fit_the_memory_is_not_timed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sizing, "TOKENS_PER_PARAM", 1e-9)  # the rule alone would go to the top
    monkeypatch.setattr(sizing, "available_memory", lambda device: 200 * 2**20)
    config = TrainConfig().replace(batch_size=16, max_time=300.0)
    choice = sizing.size_model({**get_preset("shakespeare-char").model}, config, 65, CPU,
                               probe=lambda mc: 0.01)
    assert 1 < choice.depth < 10


def test_step_time_is_measured_once_per_machine_and_step(private_cache: Path) -> None:
    config = TrainConfig().replace(batch_size=2, max_time=10.0)
    model = ModelConfig(vocab_size=32, n_layer=1, n_head=1, n_embd=16, **TINY)
    fp32 = choose_precision("float32", CPU, 16)
    first = sizing.cached_step_seconds(model, config, CPU, fp32)
    assert first > 0
    table = json.loads((private_cache / sizing.CACHE_FILE).read_text())
    assert list(table.values()) == [first] and "threads" in next(iter(table))
    assert sizing.cached_step_seconds(model, config, CPU, fp32) == first  # from the cache
    sizing.cached_step_seconds(model, config.replace(batch_size=4), CPU, fp32)
    assert len(json.loads((private_cache / sizing.CACHE_FILE).read_text())) == 2


def test_probe_leaves_the_random_state_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    model = ModelConfig(vocab_size=32, n_layer=1, n_head=1, n_embd=16, **TINY)
    sizing.probe_step_seconds(model, TrainConfig().replace(batch_size=2, grad_accum=2), CPU,
                              choose_precision("float32", CPU, 16))
    assert torch.equal(torch.rand(3), expected)


def test_a_run_takes_the_chosen_shape_and_keeps_it_on_resume(
        tmp_path: Path, tiny_corpus: Path, private_cache: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The run's model is the rung chosen, its checkpoints say why, and a resumed run keeps
    the shape without timing again."""
    out = tmp_path / "run"
    settings = dict(size="auto", max_time=4.0, block_size=32, batch_size=4, eval_iters=1,
                    eval_interval=5)
    with caplog.at_level("INFO", logger="gptscratch"):
        api.train("shakespeare-char", tiny_corpus, out, overrides=settings, stop_at=3)
    assert "--size auto:" in caplog.text and "<- chosen" in caplog.text
    ckpt = load_checkpoint(out)
    depth = ckpt.meta["sizing"]["depth"]
    assert {k: ckpt.meta["model_config"][k] for k in sizing.SHAPE_FIELDS} == \
        sizing.shape_of(depth)
    assert json.loads((private_cache / sizing.CACHE_FILE).read_text())
    caplog.clear()
    with caplog.at_level("INFO", logger="gptscratch"):
        api.train("shakespeare-char", None, out, resume=True, stop_at=4)
    assert "--size auto:" not in caplog.text
    assert load_checkpoint(out).meta["model_config"] == ckpt.meta["model_config"]


def test_a_shape_or_a_run_length_given_replaces_the_presets_auto(
        tmp_path: Path, tiny_corpus: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sizing, "probe_step_seconds", lambda *a: pytest.fail("timed"))
    assert get_preset("shakespeare-char").train.run.size == "auto"
    with caplog.at_level("DEBUG", logger="gptscratch"):
        api.train("shakespeare-char", tiny_corpus, tmp_path / "b", stop_at=1,
                  overrides=dict(n_layer=1, n_embd=32, n_head=2, block_size=16,
                                 batch_size=2, eval_iters=1))
    assert load_checkpoint(tmp_path / "b").meta["model_config"]["n_embd"] == 32
    assert "replaces the preset's --size auto" in caplog.text
    with caplog.at_level("DEBUG", logger="gptscratch"):
        api.train("shakespeare-char", tiny_corpus, tmp_path / "c", stop_at=1,
                  overrides=dict(max_iters=2, block_size=16, batch_size=2, eval_iters=1))
    assert "no time budget" in caplog.text
    assert load_checkpoint(tmp_path / "c").meta["model_config"]["n_layer"] == \
        get_preset("shakespeare-char").model["n_layer"]


@pytest.mark.parametrize(("extra", "says"), [
    (["--n-layer", "2"], "--size auto chooses the model's shape; drop --n-layer"),
    (["--max-iters", "5"], "--size auto sizes the model to a time budget; give --max-time"),
])
def test_size_auto_refusals_are_one_line_and_write_nothing(
        tmp_path: Path, tiny_corpus: Path, capsys: pytest.CaptureFixture[str],
        extra: list[str], says: str) -> None:
    out = tmp_path / "run"
    message = cli_error(["train", "--data", str(tiny_corpus), "--out", str(out), "--size",
                         "auto", *extra], capsys)
    assert says in message
    assert not out.exists()


def test_size_auto_refused_for_fine_tuning(tmp_path: Path, tiny_run: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ft"
    message = cli_error(["train", "--init-from", str(tiny_run), "--out", str(out), "--size",
                         "auto"], capsys)
    assert "a model fine-tuned with --init-from keeps its shape" in message
    assert not out.exists()
