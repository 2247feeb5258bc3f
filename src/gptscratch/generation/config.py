"""How to generate: the one generation config, validated once, where it is built.

Everything that shapes a continuation is a field here: its length, the sampling settings and
penalties (checked by `model.sampling.SamplingConfig`), beam search (`model.beam_search.
BeamConfig`), stop strings, script mode, how many samples, the seed and the KV cache. The
CLI's `sample` and `chat` flags are generated from these fields (their help text is each
field's `help` metadata), and the Python API takes the same names as keyword arguments, so a
mistake is reported the same way, before the model is loaded or a token is generated.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gptscratch.errors import UserError, require

if TYPE_CHECKING:
    from gptscratch.model.beam_search import BeamConfig
    from gptscratch.model.sampling import SamplingConfig


def _option(default: Any, help: str, flag: str | None = None, metavar: str | None = None) -> Any:
    """A field with the help text (and, where it differs from the name, the flag) of its
    command-line option."""
    return field(default=default, metadata={"help": help, "flag": flag, "metavar": metavar})


@dataclass(frozen=True)
class GenerationConfig:
    """How to continue a prompt. Row i * num_samples + j of a batch is sample j of prompt i."""

    max_new_tokens: int = _option(500, "tokens to generate per sample (default 500)")
    temperature: float = _option(0.8, "0 means greedy")
    top_k: int | None = _option(
        None, "sample only among the K most likely tokens (default: all)")
    top_p: float = _option(1.0, "sample only among the most likely tokens covering P of the "
                                "probability (default 1.0: all)")
    min_p: float = _option(0.0, "drop tokens less than MIN_P times as likely as the best "
                                "(default 0)")
    repetition_penalty: float = _option(
        1.0, "> 1 discourages tokens already in the text (default 1.0: none)")
    frequency_penalty: float = _option(
        0.0, "in [-2, 2]: penalise tokens by how often they were generated")
    presence_penalty: float = _option(0.0, "in [-2, 2]: penalise tokens once generated")
    beams: int = _option(1, "beam search with N beams (deterministic; default 1: sampling)")
    length_penalty: float = _option(1.0, "beam search: > 0 favours longer texts (default 1.0)")
    early_stopping: bool = _option(True, "beam search: go on until no running beam can win",
                                   flag="--no-early-stopping")
    num_samples: int = _option(1, "samples to generate, in one batch (default 1)")
    seed: int | None = _option(None, "same seed, same text")
    stop: tuple[str, ...] = _option(
        (), "end a sample at this text, which is not printed (repeatable)", metavar="TEXT")
    speaker: str | None = _option(
        None, "script mode: generate NAME's next speech (plays, screenplays)", metavar="NAME")
    until_next_speaker: bool = _option(
        False, "script mode: stop where another speech begins: at a line holding a speaker "
               "of the corpus and a colon, or, after a blank line, any name shaped like the "
               "corpus's (as many words as its longest name, capitalised as its names are: "
               "HERMAN: or Third Lord:)")
    use_cache: bool = _option(
        True, "re-run the whole context for every token (slow; for comparison)",
        flag="--no-cache")

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # one stop string, not its characters
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        require(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 0,
                f"--max-new-tokens ({self.max_new_tokens}) must be >= 0; "
                "try --max-new-tokens 200")
        require(isinstance(self.num_samples, int) and self.num_samples >= 1,
                f"num_samples ({self.num_samples}) must be >= 1; try --num-samples 1")
        require(all(s != "" for s in self.stop),
                "a stop string is empty; give a non-empty --stop text")
        # Building these runs their checks (temperature, top-k, top-p, penalties, beams).
        beams = self.beam.num_beams
        _ = self.sampling
        require(beams == 1 or self.num_samples <= beams,
                f"num_samples ({self.num_samples}) must be <= beams ({beams}): beam search "
                "returns at most that many hypotheses")

    # The model layer's configs are imported where they are built: those modules load torch,
    # which the CLI must not pay for just to parse its flags (or print --help).
    @functools.cached_property
    def sampling(self) -> SamplingConfig:
        """The model layer's sampling settings (penalties, temperature and filters)."""
        from gptscratch.model.sampling import SamplingConfig

        return SamplingConfig(self.temperature, self.top_k, self.top_p, self.min_p,
                              self.repetition_penalty, self.frequency_penalty,
                              self.presence_penalty)

    @functools.cached_property
    def beam(self) -> BeamConfig:
        """The model layer's beam-search settings."""
        from gptscratch.model.beam_search import BeamConfig

        return BeamConfig(self.beams, self.length_penalty, self.early_stopping)

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
