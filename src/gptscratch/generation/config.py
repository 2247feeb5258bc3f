"""The one generation config (`GenerationConfig`), validated once, where it is built.

It extends `model.config.SamplingConfig` and `BeamConfig` with the length, stop strings, script
mode, samples, seed and KV cache. Each field is a declared setting (`gptscratch.settings`): the
`sample` and `chat` flags, the Python API's keyword arguments and the errors come from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gptscratch.errors import UserError, require
from gptscratch.model.config import BeamConfig, SamplingConfig
from gptscratch.settings import check_settings, setting


@dataclass(frozen=True)
class GenerationConfig(BeamConfig, SamplingConfig):
    """How to continue a prompt. Row i * num_samples + j of a batch is sample j of prompt i,
    seeded with seed + j."""

    max_new_tokens: int = setting(500, "tokens to generate per sample (default 500)", low=0,
                                  example=200)
    num_samples: int = setting(1, "samples to generate, in one batch (default 1)", low=1,
                               example=1)
    seed: int | None = setting(None, "same seed, same text")
    stop: tuple[str, ...] = setting(
        (), "end a sample at this text, which is not printed (repeatable)", metavar="TEXT")
    speaker: str | None = setting(
        None, "script mode: generate NAME's next speech (plays, screenplays)", metavar="NAME")
    until_next_speaker: bool = setting(
        False, "script mode: stop where another speech begins: at a line holding a speaker "
               "of the corpus and a colon, or, after a blank line, any name shaped like the "
               "corpus's (as many words as its longest name, capitalised as its names are: "
               "HERMAN: or Third Lord:)")
    use_cache: bool = setting(
        True, "re-run the whole context for every token (slow; for comparison)",
        flag="--no-cache")

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # one stop string, not its characters
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        check_settings(self)  # every field's rule, the sampling and beam settings' included
        require(all(s != "" for s in self.stop),
                "a stop string is empty; every stop string needs some text")
        require(self.beams == 1 or self.num_samples <= self.beams,
                f"num_samples ({self.num_samples}) must be <= beams ({self.beams}): beam search "
                "returns at most that many hypotheses")

    @property
    def sampling(self) -> SamplingConfig:
        """The sampling settings alone."""
        return SamplingConfig(**{f.name: getattr(self, f.name)
                                 for f in dataclasses.fields(SamplingConfig)})

    @property
    def beam(self) -> BeamConfig:
        """The beam-search settings alone."""
        return BeamConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(BeamConfig)})

    @property
    def uses_beams(self) -> bool:
        return self.beams > 1

    @property
    def needs_script(self) -> bool:
        """Script mode needs the corpus's speakers (to check a name and spot headings)."""
        return self.speaker is not None or self.until_next_speaker

    @classmethod
    def build(cls, config: GenerationConfig | None = None, **options: Any) -> GenerationConfig:
        """`config` (or the defaults) with some fields replaced, by name.

        Raises:
            UserError: an unknown option name, or a value its rule refuses.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise UserError(f"unknown generation option(s) {unknown}; the options are: "
                            f"{', '.join(sorted(names))}")
        return dataclasses.replace(config or cls(), **options)
