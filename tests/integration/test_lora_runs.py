"""LoRA fine-tuning end to end: adapter-only checkpoints that name their base, loading them
for sampling, exact resume, merge-lora, bf16 frozen weights, and every refusal in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import cli_error
from hf_models import GPT2_VOCAB, make_hf_model
from safetensors import safe_open

from gptscratch import api
from gptscratch.checkpoints.checkpoint import load_checkpoint
from gptscratch.checkpoints.load import load_model
from gptscratch.cli import main
from gptscratch.errors import UserError

FAST = dict(batch_size=4, eval_iters=2, log_interval=2, dtype="float32", max_iters=6,
            eval_interval=3, warmup_iters=0, learning_rate=1e-2, min_lr=1e-3)
LORA = dict(lora_rank=4, lora_alpha=8.0, lora_targets="attn,mlp")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> Path:
    """A copy of the tiny trained run, which these tests may damage."""
    copy = tmp_path_factory.mktemp("base") / "base"
    shutil.copytree(tiny_run, copy)
    return copy


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, base: Path, tiny_corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("lora") / "run"
    api.train(init_from=base, data=tiny_corpus, out_dir=out, overrides={**FAST, **LORA})
    return out


def adapters(run: Path, prefer: str = "latest") -> dict[str, torch.Tensor]:
    path = load_checkpoint(run, prefer=prefer).path / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def logits(ckpt: Path, ids: torch.Tensor, prefer: str = "latest") -> torch.Tensor:
    model = load_model(load_checkpoint(ckpt, prefer=prefer)).model
    with torch.no_grad():
        return model(ids)


def test_a_lora_checkpoint_holds_the_adapters_and_names_its_base(
        lora_run: Path, base: Path) -> None:
    ckpt = load_checkpoint(lora_run, prefer="latest")
    tensors = adapters(lora_run)
    assert tensors and all(k.endswith((".lora_A", ".lora_B")) for k in tensors)
    assert len(tensors) == 2 * 4 * 2  # 2 layers x 4 projections x (A, B)
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if k.endswith("lora_B"))  # trained
    lora = ckpt.meta["lora"]
    assert lora["base"] == str(base.resolve()) and lora["rank"] == 4
    assert lora["targets"] == "attn,mlp" and len(lora["base_sha256"]) == 64
    base_size = (load_checkpoint(base).path / "model.safetensors").stat().st_size
    assert (ckpt.path / "model.safetensors").stat().st_size < base_size / 3
    # The optimizer state holds the adapters' moments only.
    state = ckpt.training_state()["optimizer"]["state"]
    assert sum(v["exp_avg"].numel() for v in state.values()) == sum(
        t.numel() for t in tensors.values())


def test_sampling_loads_base_plus_adapters(lora_run: Path, base: Path) -> None:
    ids = torch.randint(0, 40, (2, 16))
    adapted, plain = logits(lora_run, ids), logits(base, ids)
    assert not torch.allclose(adapted, plain)  # the adapters change the model
    [completion] = api.complete(lora_run, "ROMEO:", max_new_tokens=20, seed=1)
    assert len(completion.token_ids) == 20 and completion.finish_reason == "length"


def test_merge_lora_gives_the_same_logits_and_a_plain_checkpoint(
        lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    merged = tmp_path / "merged"
    assert main(["merge-lora", "--ckpt", str(lora_run), "--out", str(merged)]) == 0
    assert "merged the adapters" in capsys.readouterr().out
    ckpt = load_checkpoint(merged)
    assert "lora" not in ckpt.meta and ckpt.meta["merged_lora"]["rank"] == 4
    ids = torch.randint(0, 40, (2, 16))
    # merge-lora, like sample, takes a run's best checkpoint.
    assert ckpt.meta["merged_from"] == str(load_checkpoint(lora_run).path.resolve())
    assert (logits(merged, ids) - logits(lora_run, ids, "best")).abs().max().item() < 1e-5
    # Merging again into the same folder is refused: it is no longer empty.
    assert "already exists" in cli_error(
        ["merge-lora", "--ckpt", str(lora_run), "--out", str(merged)], capsys)


def test_resume_is_exact(base: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    overrides = {**FAST, **LORA, "lora_dropout": 0.1}
    api.train(init_from=base, data=tiny_corpus, out_dir=whole, overrides=overrides)
    api.train(init_from=base, data=tiny_corpus, out_dir=split, overrides=overrides, stop_at=3)
    api.train(out_dir=split, resume=True)
    a, b = adapters(whole), adapters(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_missing_or_changed_base_is_refused_in_one_line(
        base: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    own_base = tmp_path / "base"
    shutil.copytree(base, own_base)
    run = tmp_path / "run"
    api.train(init_from=own_base, data=tiny_corpus, out_dir=run,
              overrides={**FAST, **LORA, "max_iters": 1})
    # Another model in the base's place: the hash differs.
    best = load_checkpoint(own_base).path
    other = load_checkpoint(run, prefer="latest")
    with pytest.raises(UserError, match="is not the one the LoRA checkpoint") as e:
        tensors = {}
        with safe_open(str(best / "model.safetensors"), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        tensors["transformer.ln_f.weight"] += 0.5
        from gptscratch.checkpoints.checkpoint import save_checkpoint
        from gptscratch.model.gpt import GPT

        model = GPT(load_checkpoint(best).model_config)
        model.load_state_dict(tensors, strict=False)
        meta = {k: v for k, v in json.loads((best / "checkpoint.json").read_text()).items()
                if k not in ("files", "saved_at", "format_version")}
        for folder in ("best", "latest"):
            shutil.rmtree(own_base / folder, ignore_errors=True)
        save_checkpoint(own_base / "best", model, load_checkpoint(run).tokenizer(), meta)
        load_model(other)
    assert "\n" not in str(e.value)
    shutil.rmtree(own_base)
    with pytest.raises(UserError, match="needs its base model .* which cannot be loaded") as e:
        load_model(load_checkpoint(run))
    assert "\n" not in str(e.value)


def test_bf16_keeps_frozen_matrices_in_bf16_and_adapters_in_fp32(
        base: Path, tiny_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gptscratch.runtime import precision
    from gptscratch.training import setup

    # bf16 autocast runs on any CPU (emulated where it has no bf16 instructions).
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    stored: dict[str, torch.dtype] = {}

    def spy(model: torch.nn.Module) -> None:
        real(model)
        stored.update({n: p.dtype for n, p in model.named_parameters()})

    real = setup.store_frozen_in_bf16
    monkeypatch.setattr(setup, "store_frozen_in_bf16", spy)
    run = tmp_path / "run"
    caplog.set_level("INFO", logger="gptscratch")
    api.train(init_from=base, data=tiny_corpus, out_dir=run,
              overrides={**FAST, **LORA, "dtype": "bfloat16", "max_iters": 2,
                         "activation_checkpointing": True,
                         "peak_tflops": 1.0})  # no bf16 matmul timed for MFU: minutes here
    assert "memory estimate per process: weights" in caplog.text
    assert stored["transformer.h.0.mlp.c_fc.weight"] == torch.bfloat16  # frozen matrices
    assert stored["transformer.h.0.attn.c_attn.lora_A"] == torch.float32  # trained ones
    assert stored["transformer.wte.weight"] == torch.float32  # shared with the head
    tensors = adapters(run)
    assert all(t.dtype == torch.float32 for t in tensors.values())
    model = load_model(load_checkpoint(run, prefer="latest")).model
    assert torch.isfinite(model(torch.randint(0, 40, (1, 8)))).all()


def test_lora_on_a_hugging_face_gpt2_with_a_tied_head(tmp_path: Path, tiny_corpus: Path) -> None:
    hf = tmp_path / "hf"
    make_hf_model(hf, vocab_size=GPT2_VOCAB, n_embd=16, n_head=2, n_layer=2, n_positions=32)
    run, merged = tmp_path / "run", tmp_path / "merged"
    api.train(init_from=str(hf), data=tiny_corpus, out_dir=run,
              overrides={**FAST, "max_iters": 2, "lora_rank": 2, "lora_targets": "head",
                         "block_size": 16})
    api.merge_lora(run, merged)
    config = load_checkpoint(merged).model_config
    assert config.tie_embeddings is False  # the adapted head has its own weight now
    ids = torch.randint(0, GPT2_VOCAB, (1, 16))
    assert (logits(merged, ids) - logits(run, ids, "best")).abs().max().item() < 1e-5
    with pytest.raises(UserError, match="merge-lora --ckpt"):
        api.export_hf(run, tmp_path / "export")
    api.export_hf(merged, tmp_path / "export")


@pytest.mark.parametrize("extra, expected", [
    (["--lora-rank", "33"], "must be a whole number from 1 to 32"),
    (["--lora-rank", "4", "--lora-targets", "attn,ffn"], "ffn is not a LoRA target; choose "
                                                         "from attn, mlp, head"),
    (["--lora-rank", "4", "--freeze-layers", "1"], "already freezes every weight"),
    (["--lora-rank", "4", "--fsdp"], "drop --fsdp"),
    (["--lora-rank", "-2"], "must be a whole number >= 1"),
])
def test_bad_lora_settings_exit_2_in_one_line_and_write_nothing(
        base: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        extra: list[str], expected: str) -> None:
    out = tmp_path / "run"
    message = cli_error(["train", "--init-from", str(base), "--data", str(tiny_corpus),
                         "--out", str(out), "--max-iters", "1", *extra], capsys)
    assert expected in message
    assert not out.exists()


def test_lora_needs_init_from_and_merge_needs_lora(
        tiny_run: Path, tiny_corpus: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert "give it with --init-from SOURCE" in cli_error(
        ["train", "--data", str(tiny_corpus), "--out", str(out), "--lora-rank", "4"], capsys)
    assert not out.exists()
    assert "is not a LoRA checkpoint" in cli_error(
        ["merge-lora", "--ckpt", str(tiny_run), "--out", str(tmp_path / "m")], capsys)
    assert not (tmp_path / "m").exists()


def test_resume_refuses_other_lora_settings(lora_run: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    assert "--lora-rank cannot change when a LoRA run resumes" in cli_error(
        ["train", "--out", str(lora_run), "--resume", "--lora-rank", "8"], capsys)


def test_a_run_that_cannot_fit_is_refused_before_anything_is_written(
        base: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gptscratch.runtime import device

    # Room for the tiny base (~0.1 MB) but not for training it (~1.6 MB).
    monkeypatch.setattr(device, "available_memory", lambda _: 500_000)
    out = tmp_path / "run"
    message = cli_error(["train", "--init-from", str(base), "--data", str(tiny_corpus),
                         "--out", str(out), "--max-iters", "1"], capsys)
    assert "needs about" in message and "weights" in message and "activations" in message
    assert "--lora-rank 8" in message and "--activation-checkpointing" in message
    assert not out.exists()



def test_serve_loads_base_plus_adapters(lora_run: Path) -> None:
    serving = pytest.importorskip("serving")
    want = api.complete(lora_run, "ROMEO:", max_new_tokens=12, temperature=0.0)[0].text
    with serving.running(api.server_app(lora_run, device="cpu", dtype="float32")) as url:
        out = serving.client(url).completions.create(
            model=lora_run.name, prompt="ROMEO:", max_tokens=12, temperature=0.0)
    assert out.choices[0].text == want


def test_int8_weights_fold_the_adapters_in_first(lora_run: Path) -> None:
    """`--quantize int8` on a LoRA run quantizes base + update: close to the adapted model,
    not to its base."""
    from gptscratch.model.quantize import is_quantized

    ckpt = load_checkpoint(lora_run, prefer="latest")
    vocab = ckpt.meta["model_config"]["vocab_size"]
    ids = torch.randint(0, vocab, (2, 32), generator=torch.Generator().manual_seed(0))
    adapted = logits(lora_run, ids)
    quantized = load_model(ckpt, quantize="int8").model
    assert is_quantized(quantized)
    with torch.no_grad():
        got = quantized(ids)
    error = (got - adapted).abs().max() / adapted.abs().max()
    assert error < 0.05, error
