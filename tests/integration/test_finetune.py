"""`train --init-from`: fine-tuning an imported GPT-2 or an earlier run, with freezing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import cli_error
from hf_models import GPT2_VOCAB, make_hf_model

from gptscratch import api
from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.checkpoints.load import load_model
from gptscratch.cli import main
from gptscratch.training.config import TrainConfig
from gptscratch.training.optimizer import freeze_parameters, make_optimizer
from gptscratch.training.run import finetune_train_config

FAST = dict(batch_size=4, eval_iters=2, log_interval=5, dtype="float32")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 with GPT-2's vocabulary, saved as transformers saves it."""
    folder = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    make_hf_model(folder, vocab_size=GPT2_VOCAB, n_embd=16, n_head=2, n_layer=3,
                  n_positions=48)
    return folder


def weights(run: Path, prefer: str = "latest") -> dict[str, torch.Tensor]:
    return load_model(load_checkpoint(run, prefer=prefer)).model.state_dict()


def test_init_from_hf_starts_from_its_weights_with_a_cropped_context(
        hf_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    hf = make_hf_model(vocab_size=GPT2_VOCAB, n_embd=16, n_head=2, n_layer=3, n_positions=48)
    run = tmp_path / "run"
    # One step at a negligible learning rate: the saved model is the starting point.
    api.train(init_from=str(hf_dir), data=tiny_corpus, out_dir=run,
              overrides={**FAST, "max_iters": 1, "learning_rate": 1e-12, "min_lr": 0.0,
                         "warmup_iters": 0, "block_size": 24})
    ckpt = load_checkpoint(run, prefer="latest")
    assert ckpt.meta["init_from"] == str(hf_dir)
    assert ckpt.model_config.block_size == 24 and ckpt.meta["tokenizer_kind"] == "gpt2"
    assert ckpt.meta["train_config"]["learning_rate"] == 1e-12
    model = load_model(ckpt).model
    ids = torch.randint(0, GPT2_VOCAB, (2, 24))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() < 1e-5


def test_fine_tuning_an_imported_model_lowers_its_val_loss(
        hf_dir: Path, tiny_corpus: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    imported, run = tmp_path / "imported", tmp_path / "run"
    assert main(["import-hf", str(hf_dir), "--out", str(imported)]) == 0
    code = main(["train", "--init-from", str(imported), "--data", str(tiny_corpus), "--out",
                 str(run), "--max-iters", "30", "--batch-size", "8", "--block-size", "32",
                 "--eval-iters", "4", "--eval-interval", "30", "--dtype", "float32",
                 "--learning-rate", "3e-3", "--sample-tokens", "0"])
    assert code == 0, capsys.readouterr().err
    # Both measured on the whole val split the run prepared with the model's tokenizer.
    before = api.evaluate(imported, run / "data", device="cpu").loss
    after = api.evaluate(run, device="cpu").loss
    assert after < before - 1.0, (before, after)
    meta = load_checkpoint(run).meta
    assert meta["train_config"]["min_lr"] == finetune_train_config().optim.min_lr  # the defaults


def test_frozen_parameters_stay_put_through_a_resume(hf_dir: Path, tiny_corpus: Path,
                                                     tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = {**FAST, "max_iters": 6, "eval_interval": 3, "learning_rate": 1e-2,
                 "freeze_embeddings": True, "freeze_layers": 2, "block_size": 16}
    api.train(init_from=str(hf_dir), data=tiny_corpus, out_dir=run, overrides=overrides,
              stop_at=3)
    api.train(out_dir=run, resume=True)
    after = weights(run)
    ref = api.import_hf(str(hf_dir), tmp_path / "imported")
    before = weights(ref)
    frozen = [k for k in after if k.startswith(("transformer.wte", "transformer.wpe",
                                                "transformer.h.0.", "transformer.h.1.",
                                                "lm_head"))]
    trained = [k for k in after if k not in frozen]
    assert frozen and trained
    for k in frozen:
        assert torch.equal(after[k], before[k][: after[k].shape[0]]), k
    for k in trained:
        assert not torch.equal(after[k], before[k]), k
    assert load_checkpoint(run).meta["init_from"] == str(hf_dir)  # kept by the resume


def test_frozen_parameters_are_left_out_of_the_optimizer() -> None:
    from gptscratch.model.config import ModelConfig
    from gptscratch.model.gpt import GPT

    model = GPT(ModelConfig(vocab_size=11, block_size=8, n_layer=3, n_head=2, n_embd=8))
    config = TrainConfig().replace(freeze_embeddings=True, freeze_layers=2)
    freeze_parameters(model, config.finetune)
    optimizer = make_optimizer(model, config.optim, torch.device("cpu"))
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    trainable = {id(p) for p in model.transformer.h[2].parameters()}
    trainable |= {id(p) for p in model.transformer.ln_f.parameters()}
    assert in_optimizer == trainable


def test_init_from_an_earlier_gptscratch_run_keeps_its_char_tokenizer(
        tiny_run: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    text = tmp_path / "more.txt"
    text.write_text(tiny_corpus.read_text()[30_000:50_000])
    run = tmp_path / "run"
    api.train(init_from=tiny_run, data=text, out_dir=run,
              overrides={**FAST, "max_iters": 4, "eval_interval": 4})
    source, tuned = load_checkpoint(tiny_run), load_checkpoint(run)
    assert tuned.meta["tokenizer_fingerprint"] == source.meta["tokenizer_fingerprint"]
    assert tuned.model_config == source.model_config
    prepared = json.loads((run / "data" / "meta.json").read_text())
    assert prepared["tokenizer_fingerprint"] == source.meta["tokenizer_fingerprint"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--n-layer", "4"], "--n-layer (4) cannot change a model loaded with --init-from "
                             "(its n_layer is 3); drop --n-layer"),
        (["--block-size", "64"], "--block-size (64) must be between 1 and the source model's "
                                 "context of 48 tokens"),
        (["--no-tie-embeddings"], "--tie-embeddings (False) cannot change"),
        (["--tokenizer", "char"], "--tokenizer char differs from the gpt2 tokenizer"),
        (["--freeze-layers", "5"], "freeze_layers (5) exceeds the model's 3 layers"),
        (["--freeze-layers", "-1"], "freeze_layers (-1) must be a whole number >= 0"),
    ],
)
def test_bad_fine_tuning_settings(flags: list[str], expected: str, hf_dir: Path,
                                  tiny_corpus: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    line = cli_error(["train", "--init-from", str(hf_dir), "--data", str(tiny_corpus), "--out",
                      str(out), "--max-iters", "1", *flags], capsys)
    assert expected in line
    assert not (out / "latest").exists()


def test_data_prepared_with_another_tokenizer_is_refused(
        hf_dir: Path, tiny_run: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    char_data = load_checkpoint(tiny_run).meta["data_dir"]
    line = cli_error(["train", "--init-from", str(hf_dir), "--data", char_data, "--out",
                      str(tmp_path / "run")], capsys)
    assert "prepared with a char tokenizer that is not the gpt2 tokenizer" in line
    line = cli_error(["train", "--init-from", str(tiny_run), "--data", __file__, "--out",
                      str(tmp_path / "run2")], capsys)
    assert "outside the char vocabulary" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2" / "latest").exists()
