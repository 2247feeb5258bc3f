"""`gptscratch import-hf` / `export-hf`: round trips through Hugging Face's file format,
checked against transformers itself (models, AutoTokenizer, pipeline)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from conftest import cli_error
from hf_models import GPT2_VOCAB, greedy, hf_greedy, make_hf_model, transformers

from gptscratch import api
from gptscratch.cli import main
from gptscratch.data.tokenizers import EOT, CharTokenizer, Tokenizer, build_tokenizer
from gptscratch.data.tokenizers.gpt2 import gpt2_files
from gptscratch.data.tokenizers.hf_files import save_hf_tokenizer, tokenizer_from_hf_dir

# Text that exercises GPT-2's pre-tokenizer: contractions, digits, runs of spaces, code,
# accents, CJK, emoji, tabs and CRLF.
VARIED = ("I'll say it's 2024 -- we've   waited\tlong.\r\n  def f(x):\n        return x**2  \n"
          "Café naïve résumé; こんにちは世界 🌍🚀 ÅÄÖ\u00a0nbsp\u3000wide , spaced .\n\n\n")


def cli_ok(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.fixture
def hf_dir(tmp_path: Path) -> Path:
    """A tiny random GPT-2 with GPT-2's vocabulary and its tokenizer, as transformers saves it."""
    folder = tmp_path / "hf"
    make_hf_model(folder, vocab_size=GPT2_VOCAB, n_embd=12, n_head=3, n_positions=48)
    from gptscratch.data.tokenizers import gpt2_hf_tokenizer

    gpt2_hf_tokenizer().save_pretrained(folder)
    return folder


def test_import_export_import_is_lossless(hf_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    first, exported, second = tmp_path / "ours", tmp_path / "exported", tmp_path / "again"
    cli_ok(["import-hf", str(hf_dir), "--out", str(first)], capsys)
    cli_ok(["export-hf", "--ckpt", str(first), "--out", str(exported)], capsys)
    cli_ok(["import-hf", str(exported), "--out", str(second)], capsys)
    original = safetensors.torch.load_file(hf_dir / "model.safetensors")
    written = safetensors.torch.load_file(exported / "model.safetensors")
    assert original.keys() == written.keys()
    assert all(torch.equal(original[k], written[k]) for k in original)
    a, b = api.load(first, "cpu"), api.load(second, "cpu")
    assert a.checkpoint.model_config == b.checkpoint.model_config
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.tokenizer.kind == b.tokenizer.kind == "gpt2"
    hf_config = json.loads((hf_dir / "config.json").read_text())
    exported_config = json.loads((exported / "config.json").read_text())
    for key in ("n_positions", "n_embd", "n_layer", "n_head", "vocab_size",
                "tie_word_embeddings", "activation_function", "layer_norm_epsilon"):
        assert exported_config[key] == hf_config[key], key


def test_an_untied_head_survives_the_round_trip(tmp_path: Path) -> None:
    make_hf_model(tmp_path / "hf", vocab_size=GPT2_VOCAB, tie_word_embeddings=False)
    ours = api.import_hf(str(tmp_path / "hf"), tmp_path / "ours")
    model = api.load(ours, "cpu").model
    assert not model.config.tie_embeddings
    assert model.lm_head.weight is not model.transformer.wte.weight
    exported = api.export_hf(ours, tmp_path / "exported")
    original = safetensors.torch.load_file(tmp_path / "hf" / "model.safetensors")
    written = safetensors.torch.load_file(exported / "model.safetensors")
    assert "lm_head.weight" in written and original.keys() == written.keys()
    assert all(torch.equal(original[k], written[k]) for k in original)
    assert json.loads((exported / "config.json").read_text())["tie_word_embeddings"] is False


def test_transformers_runs_the_export_like_ours(hf_dir: Path, tmp_path: Path) -> None:
    ours_dir = api.import_hf(str(hf_dir), tmp_path / "ours")
    exported = api.export_hf(ours_dir, tmp_path / "exported")
    model = api.load(ours_dir, "cpu").model
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    hf.generation_config.eos_token_id = None
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    prompt = torch.tensor([tok("The meaning of life is")["input_ids"]])
    with torch.no_grad():
        assert (model(prompt) - hf(prompt).logits).abs().max().item() < 1e-5
    assert greedy(model, prompt, 20, 48) == hf_greedy(hf, prompt, 20)


@pytest.fixture(scope="module")
def char_export(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return api.export_hf(tiny_run, tmp_path_factory.mktemp("char") / "exported")


def test_pipeline_greedy_text_equals_ours_for_a_trained_char_model(
        tiny_run: Path, char_export: Path) -> None:
    pipe = transformers.pipeline("text-generation", model=str(char_export), device="cpu")
    prompt = "ROMEO:\nWhat"  # 11 characters + 21 new = the model's context of 32
    theirs = pipe(prompt, max_new_tokens=21, do_sample=False)[0]["generated_text"]
    ours = api.generate(tiny_run, prompt, max_new_tokens=21, temperature=0, device="cpu")
    assert theirs == prompt + ours
    assert len(ours) == 21


def check_hf_tokenizer(tok: Tokenizer, folder: Path, text: str) -> None:
    """AutoTokenizer loads the exported files and gives our ids and our text back."""
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    ids = tok.encode(text)
    assert hf(text)["input_ids"] == ids
    assert hf.decode(ids) == text == tok.decode(ids)
    assert len(hf) == tok.vocab_size
    assert hf.eos_token_id == tok.eot_id
    assert tokenizer_from_hf_dir(folder).fingerprint() == tok.fingerprint()  # type: ignore[union-attr]


def test_exported_gpt2_tokenizer_gives_gpt2_ids(tmp_path: Path) -> None:
    tok = build_tokenizer("gpt2")
    save_hf_tokenizer(tok, tmp_path, 1024)
    check_hf_tokenizer(tok, tmp_path, VARIED)
    assert tok.encode("Hello world") == [15496, 995]


def test_exported_bpe_tokenizer_gives_our_ids(tiny_corpus: Path, tmp_path: Path) -> None:
    tok = build_tokenizer("bpe:400", tiny_corpus.read_text()[:30_000])
    save_hf_tokenizer(tok, tmp_path, 64)
    check_hf_tokenizer(tok, tmp_path, tiny_corpus.read_text()[40_000:42_000] + VARIED)


def test_exported_char_tokenizer_gives_our_ids(tmp_path: Path) -> None:
    tok = build_tokenizer("char", VARIED)
    save_hf_tokenizer(tok, tmp_path, 64)
    check_hf_tokenizer(tok, tmp_path, VARIED[::-1])
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(Exception, match="UNK"):  # unseen characters are an error, as in ours
        hf("xyz€")


def test_gpt2_vocab_json_and_merges_txt_are_recognised(tmp_path: Path) -> None:
    encoder, merges = gpt2_files()
    shutil.copy(encoder, tmp_path / "vocab.json")
    shutil.copy(merges, tmp_path / "merges.txt")
    found = tokenizer_from_hf_dir(tmp_path)
    assert found is not None and found.kind == "gpt2"
    assert tokenizer_from_hf_dir(tmp_path / "nothing-here") is None


def test_a_folder_without_tokenizer_files_gets_gpt2s(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    make_hf_model(tmp_path / "hf", vocab_size=GPT2_VOCAB)
    cli_ok(["import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "ours")], capsys)
    assert api.load(tmp_path / "ours", "cpu").tokenizer.kind == "gpt2"
    out = cli_ok(["sample", "--ckpt", str(tmp_path / "ours"), "--prompt", "Hi",
                  "--max-new-tokens", "3", "--temperature", "0"], capsys)
    assert out.startswith("Hi")


# --- bad input: one line, exit code 2, nothing written ---------------------------------


def bad_folder(kind: str, tmp_path: Path) -> Path:
    folder = tmp_path / kind
    if kind == "no-config":
        make_hf_model(folder)
        (folder / "config.json").unlink()
    elif kind in ("llama", "bert"):
        config = (transformers.LlamaConfig(hidden_size=16, intermediate_size=32,
                                           num_hidden_layers=1, num_attention_heads=2,
                                           vocab_size=50, architectures=["LlamaForCausalLM"])
                  if kind == "llama" else
                  transformers.BertConfig(hidden_size=16, intermediate_size=32,
                                          num_hidden_layers=1, num_attention_heads=2,
                                          vocab_size=50))
        config.save_pretrained(folder)
    elif kind in ("shape", "layers"):
        make_hf_model(folder)
        config = json.loads((folder / "config.json").read_text())
        config.update({"n_positions": 64} if kind == "shape" else {"n_layer": 3})
        (folder / "config.json").write_text(json.dumps(config))
    elif kind == "truncated":
        make_hf_model(folder)
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif kind in ("truncated-bin", "pickled-code"):
        model = make_hf_model(folder)
        (folder / "model.safetensors").unlink()
        state = model.state_dict()
        if kind == "pickled-code":
            state["transformer.extra"] = time.struct_time((0,) * 9)  # not a tensor: refused
        torch.save(state, folder / "pytorch_model.bin")
        if kind == "truncated-bin":
            data = (folder / "pytorch_model.bin").read_bytes()
            (folder / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    elif kind == "no-weights":
        make_hf_model(folder)
        (folder / "model.safetensors").unlink()
    elif kind == "small-vocab-no-tokenizer":
        make_hf_model(folder, vocab_size=97)
    return folder


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("no-config", "has no config.json"),
        ("llama", "holds a llama model (LlamaForCausalLM), not GPT-2"),
        ("bert", "holds a bert model"),
        ("shape", "transformer.wpe.weight has shape (32, 16) but config.json implies (64, 16)"),
        ("layers", "missing ['transformer.h.2.attn.c_attn.bias'"),
        ("truncated", "truncated or corrupted"),
        ("truncated-bin", "truncated or corrupted"),
        ("pickled-code", "refusing"),
        ("no-weights", "has no model.safetensors or pytorch_model.bin"),
        ("small-vocab-no-tokenizer", "no tokenizer files"),
        ("missing", "is neither a folder nor a Hugging Face hub name"),
    ],
)
def test_bad_hf_input(kind: str, expected: str, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    source = bad_folder(kind, tmp_path) if kind != "missing" else tmp_path / "no" / "such"
    out = tmp_path / "out"
    line = cli_error(["import-hf", str(source), "--out", str(out)], capsys)
    assert expected in line
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_hub_name_offline_fails_within_a_second(tmp_path: Path,
                                                unreachable_hub: list[tuple[str, int]],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    line = cli_error(["import-hf", "openai-community/gpt2-medium", "--out",
                      str(tmp_path / "out")], capsys)
    assert time.perf_counter() - start < 1.0
    assert unreachable_hub == [("127.0.0.1", 9)]
    assert "'openai-community/gpt2-medium'" in line and "offline" in line
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_non_empty_folder(tiny_run: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = cli_error(["export-hf", "--ckpt", str(tiny_run), "--out", str(out)], capsys)
    assert "already exists" in line
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    line = cli_error(["export-hf", "--ckpt", str(tmp_path / "none"), "--out",
                      str(tmp_path / "o")], capsys)
    assert "not found" in line and not (tmp_path / "o").exists()


def test_a_char_vocabulary_with_end_of_text_exports_and_comes_back(tmp_path: Path) -> None:
    tok = CharTokenizer.from_text(VARIED, eot=True)
    save_hf_tokenizer(tok, tmp_path, 64)
    check_hf_tokenizer(tok, tmp_path, VARIED[::-1])
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf.convert_tokens_to_ids(EOT) == tok.eot_id == tok.vocab_size - 1
    back = tokenizer_from_hf_dir(tmp_path)
    assert back is not None and back.fingerprint() == tok.fingerprint()
