"""Choosing tokens and streaming text: greedy, top-k, top-p, seeds, stop strings, cropping."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from conftest import decode_steps

from gptscratch.checkpoints.load import LoadedModel
from gptscratch.errors import UserError
from gptscratch.generation.config import GenerationConfig
from gptscratch.generation.stream import stream_chunks
from gptscratch.model.config import ModelConfig, SamplingConfig
from gptscratch.model.gpt import GPT
from gptscratch.model.kv_cache import KVCache
from gptscratch.model.sampling import filter_logits, sample_next_token


def test_temperature_zero_is_greedy() -> None:
    logits = torch.randn(5, 30)
    ids = sample_next_token(logits, SamplingConfig(temperature=0.0))
    assert torch.equal(ids[:, 0], logits.argmax(-1))


def test_top_k_keeps_exactly_k() -> None:
    logits = torch.randn(3, 100)
    kept = torch.isfinite(filter_logits(logits, SamplingConfig(temperature=1.0, top_k=7)))
    assert kept.sum(-1).tolist() == [7, 7, 7]
    top = logits.topk(7).indices
    assert kept.gather(1, top).all()


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = torch.isfinite(filter_logits(logits, SamplingConfig(temperature=1.0, top_p=0.8)))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, SamplingConfig(temperature=1.0, top_p=0.81)))
    assert kept.tolist() == [[True, True, True, False]]
    kept = torch.isfinite(filter_logits(logits, SamplingConfig(temperature=1.0, top_p=0.1)))
    assert kept.tolist() == [[True, False, False, False]]  # the top token always survives


def test_sampling_follows_the_distribution() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0]]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    ids = sample_next_token(logits, SamplingConfig(temperature=1.0), g)[:, 0]
    freq = torch.bincount(ids, minlength=3).float() / len(ids)
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.02)


@pytest.mark.parametrize("kw", [dict(temperature=-1.0), dict(top_k=0), dict(top_p=0.0),
                                dict(top_p=1.5)])
def test_bad_sampling_settings(kw: dict[str, float]) -> None:
    with pytest.raises(UserError):
        SamplingConfig(**kw)  # type: ignore[arg-type]


def test_prompt_longer_than_context_is_cropped() -> None:
    model = GPT(ModelConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    idx = torch.randint(0, 10, (1, 30))
    for use_cache in (True, False):
        out = list(decode_steps(model, idx, 5, SamplingConfig(temperature=0.0),
                                   use_cache=use_cache))
        assert len(out) == 5
        # Cropping means only the last block_size tokens matter.
        cropped = list(decode_steps(model, idx[:, -8:], 5, SamplingConfig(temperature=0.0),
                                       use_cache=use_cache))
        assert [int(s.ids) for s in out] == [int(s.ids) for s in cropped]


class Letters:
    """A fake tokenizer: id i is the i-th string in `pieces`."""

    def __init__(self, pieces: Sequence[str]) -> None:
        self.pieces = list(pieces)

    def encode(self, text: str) -> list[int]:
        return [self.pieces.index(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.pieces[i] for i in ids)


class _Scripted(GPT):
    """A GPT whose greedy output follows a script: its features are one-hot scores of the
    scripted next token, and its head passes them through."""

    def __init__(self, sequence: Sequence[int], vocab: int) -> None:
        super().__init__(ModelConfig(vocab_size=vocab, block_size=64, n_layer=1, n_head=1,
                                     n_embd=8))
        self.script = list(sequence)
        self.lm_head = torch.nn.Identity()  # type: ignore[assignment]

    def features(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        if kv_cache is not None:
            kv_cache.advance(idx.size(1))
        h = torch.zeros(idx.size(0), idx.size(1), self.config.vocab_size)
        h[:, -1, self.script.pop(0)] = 1.0
        return h


def _forced_model(sequence: Sequence[int], vocab: int) -> GPT:
    return _Scripted(sequence, vocab).eval()


def stream_text(model: GPT, codec: object, prompt: str, **options: object) -> list[str]:
    """The pieces of one prompt's continuation, as `stream_chunks` yields them."""
    config = GenerationConfig(**options)  # type: ignore[arg-type]
    chunks = stream_chunks(LoadedModel(model, codec), prompt, config)  # type: ignore[arg-type]
    return [c.text for c in chunks if c.text]


def test_stop_string_ends_generation_without_emitting_it() -> None:
    codec = Letters(["a", "b", "E", "N", "D", "c"])
    out_ids = [0, 1, 2, 3, 4, 5, 5, 5]  # "abENDccc"
    model = _forced_model(out_ids, 6)
    pieces = stream_text(model, codec, "a", max_new_tokens=8, temperature=0.0, stop=["END"])
    assert "".join(pieces) == "ab"
    assert all("E" not in p for p in pieces)  # the partial stop text was held back


def test_incomplete_characters_are_held_back() -> None:
    codec = Letters(["x", "\ufffd", "é"])

    class Bytes(Letters):
        def decode(self, ids: Sequence[int]) -> str:
            # id 1 is half a character; followed by id 2 the pair decodes to "é".
            text = "".join(self.pieces[i] for i in ids)
            return text.replace("\ufffdé", "é")

    model = _forced_model([0, 1, 2, 0], 3)
    pieces = stream_text(model, Bytes(codec.pieces), "x", max_new_tokens=4, temperature=0.0)
    assert "".join(pieces) == "xéx"
    assert all("\ufffd" not in p for p in pieces)


def test_empty_stop_string_is_rejected() -> None:
    model = _forced_model([0], 2)
    with pytest.raises(UserError, match="stop"):
        stream_text(model, Letters(["a", "b"]), "a", max_new_tokens=1, stop=[""])
