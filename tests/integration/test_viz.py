"""Pictures: each command writes a real PNG of the expected size, drawn from the model's own
numbers (checked against independent recomputations)."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptscratch import api
from gptscratch.cli import main
from gptscratch.model.config import SamplingConfig
from gptscratch.viz import attention, curves, distribution, embeddings, logit_lens
from gptscratch.viz.canvas import DPI, token_label

PROMPT = "First Citizen:\nYou are"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG signature and IHDR chunk; fails on anything else."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert len(data) > 5000  # a real picture, not an empty canvas
    return width, height


def px(inches: tuple[float, float]) -> tuple[int, int]:
    return round(inches[0] * DPI), round(inches[1] * DPI)


@pytest.fixture(scope="module")
def tiny(tiny_run: Path) -> tuple[object, object]:
    loaded = api.load(tiny_run, "cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    return model, tokenizer


def test_token_labels_are_visible() -> None:
    assert token_label("\n") == "\\n"
    assert token_label(" ") == "\u2423"
    assert token_label("a$b") == "a\\$b"


def test_curves_png_several_runs(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.png"
    assert api.plot_curves([tiny_run, tiny_run / "metrics.jsonl"], out) == out
    assert png_size(out) == px(curves.FIGSIZE)
    data = curves.load_curves(tiny_run)
    assert [s for s, _ in data.loss] == [5, 10, 15, 20]  # log_interval 5, max_iters 20
    assert [s for s, _ in data.val_loss] == [10, 20]  # eval_interval 10


def test_attention_weights_are_the_models_own(tiny: tuple, tmp_path: Path) -> None:
    model, tokenizer = tiny
    maps = attention.attention_maps(model, tokenizer, PROMPT)
    L, H, T, _ = maps.weights.shape
    assert (L, H, T) == (2, 2, len(PROMPT))
    np.testing.assert_allclose(maps.weights.sum(-1), 1.0, atol=1e-5)  # rows are distributions
    assert (maps.weights[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0).all()
    # Oracle: layer 0 recomputed from the raw parameters, without the model's attention code.
    idx = torch.tensor([tokenizer.encode(PROMPT)])
    with torch.no_grad():
        x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(T))
        block = model.transformer.blocks()[0]
        q, k, _ = block.attn.c_attn(block.ln_1(x)).split(32, dim=2)
        q, k = (t.view(1, T, H, 16).transpose(1, 2) for t in (q, k))
        scores = q @ k.transpose(-1, -2) / math.sqrt(16)
        scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        expected = F.softmax(scores, dim=-1)[0].numpy()
    np.testing.assert_allclose(maps.weights[0], expected, atol=1e-5)
    out = attention.plot_attention(maps, tmp_path / "a.png")
    assert png_size(out) == px(attention.attention_figure_size(2, 2, T))
    one = attention.plot_attention(maps, tmp_path / "a1.png", layers=[1])
    assert png_size(one) == px(attention.attention_figure_size(1, 2, T))


def test_the_attention_picture_says_what_to_look_for(tiny: tuple, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = tiny
    drawn: list[Any] = []
    real_save = attention.canvas.save_png
    monkeypatch.setattr(attention.canvas, "save_png",
                        lambda fig, out: drawn.append(fig) or real_save(fig, out))
    attention.plot_attention(attention.attention_maps(model, tokenizer, PROMPT),
                             tmp_path / "a.png")
    texts = [t.get_text() for t in drawn[0].texts]
    assert attention.WHAT_TO_LOOK_FOR in texts
    assert "previous-token head" in attention.WHAT_TO_LOOK_FOR


def test_next_token_keeps_what_the_sampler_keeps(tiny: tuple) -> None:
    model, tokenizer = tiny
    d = distribution.next_token_distribution(model, tokenizer, PROMPT,
                                             SamplingConfig(temperature=1.0, top_k=3), top=10)
    assert d.n_kept == 3 and d.kept.tolist() == [True] * 3 + [False] * 7
    top3 = d.model_probs[:3]
    np.testing.assert_allclose(d.sample_probs[:3], top3 / top3.sum(), rtol=1e-5)
    assert (d.sample_probs[3:] == 0).all()
    assert (np.diff(d.model_probs) <= 0).all()  # most likely first
    greedy = distribution.next_token_distribution(model, tokenizer, PROMPT,
                                                  SamplingConfig(temperature=0.0))
    assert greedy.n_kept == 1 and greedy.sample_probs[0] == 1.0
    nucleus = distribution.next_token_distribution(model, tokenizer, PROMPT,
                                                   SamplingConfig(temperature=1.0, top_p=0.5))
    kept = nucleus.model_probs[nucleus.kept]
    assert kept.sum() >= 0.5 and kept[:-1].sum() < 0.5  # the smallest set reaching p


def test_embeddings_pca_matches_numpy(tiny: tuple, tmp_path: Path) -> None:
    model, tokenizer = tiny
    pic = embeddings.embedding_picture(model, tokenizer)
    wte = model.transformer.wte.weight.detach().numpy()
    centred = wte - wte.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred[pic.ids] @ vt[:2].T
    np.testing.assert_allclose(np.abs(pic.coords), np.abs(expected), atol=1e-4)
    np.testing.assert_allclose(pic.explained, (s**2 / (s**2).sum())[:2], rtol=1e-4)
    np.testing.assert_allclose(np.diag(pic.position_similarity), 1.0, atol=1e-5)
    assert len(pic.tokens) == model.config.vocab_size  # a char vocabulary is shown whole
    assert png_size(embeddings.plot_embeddings(pic, tmp_path / "e.png")) == px(embeddings.FIGSIZE)


def test_logit_lens_last_row_is_the_model_output(tiny: tuple, tmp_path: Path) -> None:
    model, tokenizer = tiny
    lens = logit_lens.logit_lens(model, tokenizer, PROMPT)
    assert lens.stages == ["embeddings", "after block 0", "after block 1"]
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer.encode(PROMPT)]))[0]
    np.testing.assert_array_equal(lens.top_ids[-1], logits.argmax(-1).numpy())
    probs = F.softmax(logits, -1)
    np.testing.assert_allclose(lens.top_probs[-1], probs.max(-1).values.numpy(), rtol=1e-5)
    true_next = probs[torch.arange(len(PROMPT) - 1), lens.ids[1:]]
    np.testing.assert_allclose(lens.next_probs[-1], true_next.numpy(), rtol=1e-5)
    T, R = len(PROMPT), 3
    assert png_size(logit_lens.plot_logit_lens(lens, tmp_path / "l.png")) == px(
        (0.62 * T + 4.0, 0.55 * R + 2.3))


@pytest.mark.parametrize("picture, extra", [
    ("attention", ["--prompt", PROMPT, "--layer", "0"]),
    ("next-token", ["--prompt", PROMPT, "--temperature", "0.7", "--top-k", "5", "--top-p", "0.9"]),
    ("embeddings", ["--tokens", "30"]),
    ("logit-lens", ["--prompt", PROMPT]),
])
def test_viz_cli_writes_png(picture: str, extra: list[str], tiny_run: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"{picture}.png"
    assert main(["viz", picture, "--ckpt", str(tiny_run), "--out", str(out), *extra]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    width, height = png_size(out)
    assert width >= 800 and height >= 350


def test_viz_cli_curves(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    assert main(["viz", "curves", "--runs", str(tiny_run), "--out", str(out)]) == 0
    assert png_size(out) == px(curves.FIGSIZE)


@pytest.mark.parametrize("argv, message", [
    (["viz", "curves", "--runs", "nope", "--out", "{tmp}/x.png"], "no metrics file"),
    (["viz", "attention", "--ckpt", "{run}", "--prompt", "hi", "--out", "{tmp}/x.jpg"],
     "must end in .png"),
    (["viz", "attention", "--ckpt", "{run}", "--prompt", "hi", "--layer", "7",
      "--out", "{tmp}/x.png"], "layer 7 does not exist"),
    (["viz", "next-token", "--ckpt", "{run}", "--prompt", "hi", "--top-k", "0",
      "--out", "{tmp}/x.png"], "top_k (0) must be >= 1"),
    (["viz", "logit-lens", "--ckpt", "{run}", "--prompt", "\u20ac", "--out", "{tmp}/x.png"],
     "outside the char vocabulary"),
])
def test_viz_cli_errors_leave_no_file(argv: list[str], message: str, tiny_run: Path,
                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(tmp=tmp_path, run=tiny_run) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_embeddings_show_the_most_frequent_training_tokens(tiny_run: Path) -> None:
    from collections import Counter

    from gptscratch.checkpoints.checkpoint import load_checkpoint
    from gptscratch.data.prepare import load_prepared

    data_dir = load_checkpoint(tiny_run).meta["data_dir"]
    prepared = load_prepared(data_dir)
    text = prepared.tokenizer.decode(np.asarray(prepared.train_tokens()).tolist())
    counts = Counter(text).most_common()
    ids = embeddings.frequent_token_ids(data_dir, 5)
    assert ids is not None
    shown = [prepared.tokenizer.decode([int(i)]) for i in ids]
    assert [c for c, _ in counts[:5]] == shown  # ' ', 'e', ... in order of frequency
    assert embeddings.frequent_token_ids(tiny_run / "no-such-dir", 5) is None
