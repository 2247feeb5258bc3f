"""GenerationConfig: every generation setting in one place, checked once when built, and the
`sample` / `chat` flags generated from it."""

from __future__ import annotations

import dataclasses

import pytest

from gptscratch.cli.parser import add_setting_flags, build_parser
from gptscratch.errors import SettingError, UserError
from gptscratch.generation.config import GenerationConfig
from gptscratch.model.config import BeamConfig, SamplingConfig
from gptscratch.settings import setting


def test_the_model_layer_settings_come_from_the_config() -> None:
    config = GenerationConfig(temperature=0.5, top_k=7, min_p=0.1, repetition_penalty=1.2,
                              beams=3, length_penalty=0.5, early_stopping=False, num_samples=2)
    assert config.sampling == SamplingConfig(0.5, 7, 1.0, 0.1, 1.2, 0.0, 0.0)
    assert config.beam == BeamConfig(3, 0.5, False)
    assert config.uses_beams and not config.needs_script
    assert GenerationConfig(until_next_speaker=True).needs_script


@pytest.mark.parametrize(("options", "message"), [
    ({"max_new_tokens": -1}, "max_new_tokens (-1) must be >= 0; try max_new_tokens=200"),
    ({"num_samples": 0}, "num_samples (0) must be >= 1"),
    ({"stop": ["ok", ""]}, "stop string is empty"),
    ({"temperature": -1.0}, "temperature (-1.0) must be >= 0"),
    ({"beams": 0}, "beams (0) must be >= 1"),
    ({"beams": 2, "num_samples": 3}, "num_samples (3) must be <= beams (2)"),
])
def test_each_rule_is_checked_when_the_config_is_built(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        GenerationConfig(**options)
    assert "--" not in str(e.value)  # below the CLI an error names the setting, not a flag


def test_build_replaces_fields_by_name_and_refuses_unknown_ones() -> None:
    base = GenerationConfig(temperature=0.0)
    config = GenerationConfig.build(base, max_new_tokens=5, stop="\n\n")
    assert (config.temperature, config.max_new_tokens, config.stop) == (0.0, 5, ("\n\n",))
    assert GenerationConfig.build(None) == GenerationConfig()
    with pytest.raises(UserError, match=r"unknown generation option\(s\) \['temprature'\]"):
        GenerationConfig.build(temprature=0.5)


def test_sample_flags_are_the_config_fields_with_its_defaults() -> None:
    args = build_parser().parse_args(["sample", "--ckpt", "run"])
    for field in dataclasses.fields(GenerationConfig):
        assert getattr(args, field.name) == (list(field.default) if field.name == "stop"
                                             else field.default), field.name


def test_flags_set_every_field() -> None:
    argv = ["sample", "--ckpt", "run", "--max-new-tokens", "9", "--temperature", "0.3",
            "--top-k", "4", "--top-p", "0.5", "--min-p", "0.2", "--repetition-penalty", "1.5",
            "--frequency-penalty", "0.1", "--presence-penalty", "0.2", "--beams", "2",
            "--length-penalty", "0.7", "--no-early-stopping", "--num-samples", "2",
            "--seed", "4", "--stop", "a", "--stop", "b", "--speaker", "ROMEO",
            "--until-next-speaker", "--no-cache"]
    args = vars(build_parser().parse_args(argv))
    names = [f.name for f in dataclasses.fields(GenerationConfig)]
    config = GenerationConfig(**{name: args[name] for name in names})
    assert config == GenerationConfig(
        max_new_tokens=9, temperature=0.3, top_k=4, top_p=0.5, min_p=0.2,
        repetition_penalty=1.5, frequency_penalty=0.1, presence_penalty=0.2, beams=2,
        length_penalty=0.7, early_stopping=False, num_samples=2, seed=4, stop=("a", "b"),
        speaker="ROMEO", until_next_speaker=True, use_cache=False)


def test_chat_has_every_generation_flag_but_the_number_of_samples() -> None:
    args = vars(build_parser().parse_args(["chat", "--ckpt", "run"]))
    names = {f.name for f in dataclasses.fields(GenerationConfig)}
    assert names - set(args) == {"num_samples"}


def test_a_setting_error_is_said_with_the_setting_or_its_flag() -> None:
    with pytest.raises(SettingError) as e:
        SamplingConfig(top_k=0)
    assert str(e.value) == "top_k (0) must be >= 1; try top_k=50, or leave it out to keep all"
    assert e.value.render("--top-k") == ("top_k (0) must be >= 1; try --top-k 50, or leave it "
                                         "out to keep all")
    assert e.value.describe() == "top_k (0) must be >= 1"  # what the server says


@dataclasses.dataclass(frozen=True)
class WithTypicalP(SamplingConfig):
    """A copy of the sampling declaration with one more setting."""

    typical_p: float = setting(1.0, "keep the locally typical tokens covering P", low=0, high=1,
                               low_open=True, example=0.9)


def test_a_new_setting_appears_as_a_flag_and_a_request_field() -> None:
    """One declaration: a setting added to it becomes a CLI flag (with its help and default)
    and a field of the server's requests (with its rule), with no code of their own."""
    import argparse

    from gptscratch.server.errors import APIError
    from gptscratch.server.schemas import request_model, sampling_config

    parser = argparse.ArgumentParser()
    add_setting_flags(parser, WithTypicalP)
    assert parser.parse_args([]).typical_p == 1.0
    assert parser.parse_args(["--typical-p", "0.5"]).typical_p == 0.5
    assert "keep the locally typical tokens covering P" in parser.format_help()
    body = request_model(WithTypicalP, temperature=1.0)
    assert body(typical_p=0.5).typical_p == 0.5 and body().temperature == 1.0
    assert sampling_config(body(typical_p=0.5), WithTypicalP) == WithTypicalP(
        temperature=1.0, typical_p=0.5)
    with pytest.raises(APIError) as refused:
        sampling_config(body(typical_p=0), WithTypicalP)
    assert (refused.value.status, refused.value.param) == (400, "typical_p")
    assert refused.value.message == "typical_p (0.0) must be in (0, 1]"
