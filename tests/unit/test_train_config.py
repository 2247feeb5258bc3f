"""TrainConfig in sections: each section validated on its own, the flat names that checkpoints,
presets and flags use mapping onto them one to one."""

from __future__ import annotations

import dataclasses

import pytest

from gptscratch.cli.parser import build_parser
from gptscratch.errors import UserError
from gptscratch.model.config import ModelConfig
from gptscratch.training.config import SECTIONS, TrainConfig
from gptscratch.training.presets import MODERN_RECIPE, PRESETS, get_preset


def test_field_names_are_unique_across_sections() -> None:
    names = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) == len(TrainConfig.field_names())


def test_the_flat_form_round_trips() -> None:
    config = TrainConfig().replace(batch_size=3, max_time=60.0, dtype="float32",
                                   freeze_layers=1)
    flat = config.to_dict()
    assert flat["batch_size"] == 3 and flat["freeze_layers"] == 1
    assert TrainConfig.from_dict(flat) == config
    assert (config.optim.batch_size, config.run.max_time, config.system.dtype,
            config.finetune.freeze_layers) == (3, 60.0, "float32", 1)


def test_from_dict_ignores_names_it_does_not_know() -> None:
    """A checkpoint written by a newer version may hold settings this one lacks."""
    assert TrainConfig.from_dict({"batch_size": 5, "from_the_future": 1}).optim.batch_size == 5


def test_replace_checks_the_changed_section_and_the_names() -> None:
    with pytest.raises(UserError, match="eval_iters"):
        TrainConfig().replace(eval_iters=0)
    with pytest.raises(UserError, match="peak_tflops"):
        TrainConfig().replace(peak_tflops=0.0)
    with pytest.raises(UserError, match=r"unknown training setting\(s\) \['lr'\]"):
        TrainConfig().replace(lr=0.1)


def test_every_field_is_a_train_flag() -> None:
    args = vars(build_parser().parse_args(["train"]))
    assert set(TrainConfig.field_names()) <= set(args)
    assert all(args[name] is None for name in TrainConfig.field_names())  # the preset's value


def test_presets_build() -> None:
    for make in PRESETS.values():
        preset = make()
        assert isinstance(preset.train, TrainConfig)


def test_the_shakespeare_char_variants() -> None:
    """shakespeare-char is -gpt2 with exactly MODERN_RECIPE changed, each setting landing in
    the model or the training config, and its model sized to the time (`--size auto`);
    -modern is shakespeare-char by a lasting name; both build a valid model."""
    char, gpt2, modern = (get_preset(f"shakespeare-char{s}") for s in ("", "-gpt2", "-modern"))
    assert (modern.tokenizer, modern.model, modern.train) == (char.tokenizer, char.model,
                                                              char.train)
    assert char.tokenizer == gpt2.tokenizer
    model_changes = {k: v for k, v in char.model.items() if gpt2.model.get(k) != v}
    train_changes = {k: v for k, v in char.train.to_dict().items()
                     if gpt2.train.to_dict()[k] != v}
    assert {**model_changes, **train_changes} == {**MODERN_RECIPE, "size": "auto"}
    assert gpt2.train.run.size == "fixed"
    assert set(model_changes) == set(MODERN_RECIPE) - {"optimizer"}
    assert char.train.optim.optimizer == "muon" and gpt2.train.optim.optimizer == "adamw"
    for preset in (gpt2, char):
        config = ModelConfig(vocab_size=65, **preset.model)
        assert config.block_size == 128 and config.n_layer == 3
    assert ModelConfig(vocab_size=65, **char.model).positions == "rope"
    assert ModelConfig(vocab_size=65, **gpt2.model).positions == "learned"


def test_train_config_validation() -> None:
    with pytest.raises(UserError, match="batch_size"):
        TrainConfig().replace(batch_size=0)
    with pytest.raises(UserError, match="min_lr"):
        TrainConfig().replace(learning_rate=1e-3, min_lr=1e-2)
