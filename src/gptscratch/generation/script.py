"""Script mode: plays and screenplays, where each speech is headed by its speaker's name.

Two layouts: "line" (tinyshakespeare: a blank line, `ROMEO:` alone on its line, the speech
below) and "inline" (many TV scripts: `ROMEO: speech...`). `find_script_format` learns the
layout and speakers from a corpus (`script_format` caches it per prepared corpus),
`speaker_prompts` opens a named speaker's next speech, and `NextSpeakerStop` ends generation
where another speech begins.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptscratch.checkpoints.checkpoint import Checkpoint
from gptscratch.data.token_files import PreparedData, is_prepared_dir, load_prepared
from gptscratch.errors import UserError
from gptscratch.files import atomic_file

log = logging.getLogger("gptscratch")

# A speaker name: starts with a capital, then up to ~40 name characters ("FIRST CITIZEN",
# "Lady Capulet", "MR. DARCY"). It never contains a colon.
_NAME = r"[A-Z][A-Za-z0-9' .,&-]{0,40}"
# A corpus's speakers show up early: scan its first 50M ids (never gigabytes), 1M at a time.
_SCAN_CHUNK, _SCAN_TOKENS = 1_000_000, 50_000_000
_LINE_LABEL = re.compile(rf"(?:^|\n)\n(?P<name>{_NAME}):[ \t]*\n")
_INLINE_LABEL = re.compile(rf"(?m)^(?P<name>{_NAME}): +\S")
# A line alone between blank lines: where a script puts stage directions and scene headings.
_ALONE = re.compile(r"(?<=\n\n)(?P<line>[^\n]+)\n(?=\n)")
# A line's first word after a blank line, once it is whole (whitespace follows it).
_OPENING_WORD = re.compile(r"(?<=\n\n)(?P<word>\S+)(?=\s)")


@dataclass(frozen=True)
class ScriptFormat:
    """A corpus's script layout ("line" or "inline"), speakers (name -> speeches) and the
    words that open its stage directions and scene headings (`Enter`, `Exeunt`, `SCENE`)."""

    style: str
    speakers: dict[str, int]
    directions: frozenset[str] = frozenset()

    def resolve(self, name: str) -> str | None:
        """The corpus's spelling of a speaker name (matched ignoring case), or None."""
        if name in self.speakers:
            return name
        folded = {n.casefold(): n for n in self.speakers}
        return folded.get(name.strip().casefold())

    def examples(self, n: int = 12) -> str:
        """The most frequent speakers, for error messages."""
        top = sorted(self.speakers, key=lambda s: -self.speakers[s])[:n]
        more = len(self.speakers) - len(top)
        return ", ".join(top) + (f" (and {more:,} more)" if more > 0 else "")

    def name_shape(self) -> NameShape:
        """What this corpus's speaker names look like (`NameShape`)."""
        return NameShape.of(self.speakers)


@dataclass(frozen=True)
class NameShape:
    """The shape of a cast's names, to recognise names it never had: a model invents speakers
    (`HERMAN`, `Third Lord`) and misspells them. A name has at most `max_words` words (one more
    than the longest name's); with `capitals` (`FIRST WITCH`) 80 % of its letters are capitals
    (`HELENNY V ElPH` still counts), else each word is capitalised but the cast's lower-case
    `joiners` (`Duke of York`)."""

    max_words: int = 4
    capitals: bool = True
    joiners: frozenset[str] = frozenset()

    @classmethod
    def of(cls, cast: Iterable[str]) -> NameShape:
        names = [n.split() for n in cast]
        words = [w for n in names for w in n]
        return cls(max_words=1 + max(map(len, names), default=3),
                   capitals=all(w.isupper() for w in words if any(c.isalpha() for c in w)),
                   joiners=frozenset(w for w in words if w[0].islower()))

    def fits(self, name: str) -> bool:
        words = name.split()
        if not words or not words[0][0].isupper() or len(words) > self.max_words:
            return False
        if self.capitals:
            letters = [c for c in name if c.isalpha()]
            return sum(c.isupper() for c in letters) >= 0.8 * len(letters)
        return all(w[0].isupper() or w in self.joiners for w in words)


def find_script_format(text: str | Iterable[str], min_speeches: int = 2) -> ScriptFormat | None:
    """The speakers of a script corpus (its text, or its text in pieces); None if it is not a
    script. A speaker heads `min_speeches` speeches at least (which filters out one-off lines
    ending in a colon); a script needs two speakers.

    Its directions are learned the same way: the capitalised first words of lines that stand
    alone between blank lines (`Exit PHILOSTRATE`, `SCENE II. A wood.`), each opening at least
    `min_speeches` of them and 1 % of them all (a play's title, `The Tempest`, is too rare)."""
    counts = {"line": Counter[str](), "inline": Counter[str]()}
    alone = Counter[str]()
    for piece in [text] if isinstance(text, str) else text:
        for style, pattern in (("line", _LINE_LABEL), ("inline", _INLINE_LABEL)):
            counts[style].update(m["name"].strip() for m in pattern.finditer(piece))
        alone.update(_direction_word(m["line"]) for m in _ALONE.finditer(piece))
    found = {style: {n: c for n, c in counted.most_common() if c >= min_speeches}
             for style, counted in counts.items()}
    style = max(found, key=lambda s: sum(found[s].values()))
    if len(found[style]) < 2:
        return None
    del alone[""]
    least = max(min_speeches, 0.01 * sum(alone.values()))
    return ScriptFormat(style, found[style],
                        frozenset(w for w, c in alone.items() if c >= least))


def _direction_word(line: str) -> str:
    """The word a line alone would open a direction with, or "" (a heading, not capitalised)."""
    words = line.split()
    if not words or line.rstrip().endswith(":") or not words[0][0].isupper():
        return ""
    return words[0].rstrip(",.;:")


def corpus_script(checkpoint: Checkpoint | None) -> ScriptFormat | None:
    """The speakers of a model's training corpus; None for a model without a checkpoint."""
    return script_format(checkpoint) if checkpoint is not None else None


def script_format(checkpoint: Checkpoint) -> ScriptFormat | None:
    """The speakers of the checkpoint's training corpus (None if it is not a script, or its
    data is gone). Found once and cached beside the prepared data as script.json."""
    data_dir = Path(checkpoint.meta.get("data_dir", ""))
    if not is_prepared_dir(data_dir):
        _warn_corpus_gone(str(data_dir))
        return None
    cached = data_dir / "script.json"
    known = _read_cached(cached)
    if not isinstance(known, bool):
        return known
    found = find_script_format(_corpus_text(load_prepared(data_dir)))
    with atomic_file(cached) as tmp:
        payload = ({"style": found.style, "speakers": found.speakers,
                    "directions": sorted(found.directions)} if found else {})
        Path(tmp).write_text(json.dumps(payload), encoding="utf-8")
    return found


def _corpus_text(prepared: PreparedData) -> Iterator[str]:
    """The corpus's text, in pieces, up to `_SCAN_TOKENS` ids."""
    seen = 0
    for tokens in (prepared.train_tokens(), prepared.val_tokens()):
        for start in range(0, len(tokens), _SCAN_CHUNK):
            if seen >= _SCAN_TOKENS:
                return
            ids = np.asarray(tokens[start:start + _SCAN_CHUNK]).tolist()
            seen += len(ids)
            yield prepared.tokenizer.decode(ids)


def _read_cached(path: Path) -> ScriptFormat | None | bool:
    """The cached answer of `script_format` (None: not a script), or False when there is no
    usable cache (absent, damaged, or from before directions were learned: found again)."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if d == {}:
        return None
    speakers = d.get("speakers") if isinstance(d, dict) else None
    directions = d.get("directions") if isinstance(d, dict) else None
    if not (isinstance(speakers, dict) and d.get("style") in ("line", "inline")
            and len(speakers) >= 2 and all(isinstance(k, str) and k and isinstance(v, int)
                                           for k, v in speakers.items())
            and isinstance(directions, list) and all(isinstance(w, str) for w in directions)):
        return False
    return ScriptFormat(str(d["style"]), dict(speakers), frozenset(directions))


@functools.cache
def _warn_corpus_gone(data_dir: str) -> None:
    """Once per corpus and process (a chat asks at every turn)."""
    log.warning("the run's data (%s) is gone: speaker names cannot be checked", data_dir)


def resolve_speaker(speaker: str, script: ScriptFormat | None) -> tuple[str, str]:
    """The corpus's spelling of `speaker` and the corpus's layout ("line" without a corpus).

    Raises:
        UserError: the corpus has speakers and `speaker` is not one of them.
    """
    if script is None:
        return speaker, "line"
    name = script.resolve(speaker)
    if name is None:
        raise UserError(f"speaker {speaker!r} is not in the training corpus; its speakers "
                        f"include {script.examples()}")
    return name, script.style


def speaker_prompts(prompts: Sequence[str], speaker: str | None,
                    script: ScriptFormat | None) -> list[str]:
    """The prompts the model continues: each followed by `speaker`'s heading, if one is
    given (script mode), so the continuation is that character's next speech."""
    if speaker is None:
        return list(prompts)
    name, style = resolve_speaker(speaker, script)
    return [speaker_prompt(p, name, style) for p in prompts]


def speaker_prompt(prompt: str, name: str, style: str) -> str:
    """`prompt` followed by the heading of `name`'s next speech, so the model writes it."""
    base = prompt.rstrip("\n")
    if style == "inline":
        return (base + "\n" if base else "") + f"{name}: "
    return (base + "\n\n" if base else "") + f"{name}:\n"


def add_speech(transcript: str, name: str, speech: str, style: str) -> str:
    """The transcript of a dialogue with one more speech appended (for `gptscratch chat`)."""
    return speaker_prompt(transcript, name, style) + speech.strip() + "\n"


class NextSpeakerStop:
    """A `StopRule` ending a `speaker_prompt`'s speech where the next speaker's heading begins:
    a name and a colon (line style: alone on its line; inline: at a line's start), the name a
    corpus speaker or, after a blank line in line style, shaped like one (`NameShape`), since
    invented speakers' speeches must end too (without a corpus, any name in capitals). A speech
    also ends at a blank line followed by one of the corpus's direction words (`Exeunt`, `Enter
    ALBOT`, `SCENE II.`). Text that could still become a heading or a direction (an unfinished
    line, and the blank lines before it) is held back: a heading is never half shown."""

    def __init__(self, script: ScriptFormat | None) -> None:
        self.style = script.style if script is not None else "line"
        self.names = set(script.speakers) if script is not None else set()
        self.directions = script.directions if script is not None else frozenset()
        self.shape = script.name_shape() if script is not None else NameShape()
        self.suffix = ":" if self.style == "line" else ": "
        ending = r":[ \t]*\n" if self.style == "line" else r": "
        self.pattern = re.compile(rf"(?m)^(?P<name>{_NAME}){ending}")

    def _is_heading(self, text: str, match: re.Match[str]) -> bool:
        name = match["name"].strip()
        if name in self.names:
            return True
        # An invented name needs the layout's evidence: line style, a blank line before it.
        blank_before = match.start() == 0 or text.endswith("\n\n", 0, match.start())
        return (self.style == "inline" or blank_before) and self.shape.fits(name)

    def _could_become_heading(self, text: str, start: int) -> bool:
        """Whether the unfinished last line, from `start`, may still become a heading (or,
        after a blank line, a direction)."""
        line = text[start:].rstrip(" \t") if self.style == "line" else text[start:]
        if any((n + self.suffix).startswith(line) for n in self.names):
            return True
        if (text.endswith("\n\n", 0, start) and line and not any(c.isspace() for c in line)
                and any(d.startswith(line.rstrip(",.;:")) for d in self.directions)):
            return True
        if self.style == "line" and not text.endswith("\n\n", 0, start):
            return False  # an invented name needs a blank line before it
        name = line.removesuffix(":")
        return re.fullmatch(_NAME, name) is not None and self.shape.fits(name)

    def _direction_at(self, text: str) -> int | None:
        """Where the first direction (a direction word after a blank line) starts, or None."""
        if self.directions:
            for m in _OPENING_WORD.finditer(text):
                if m["word"].rstrip(",.;:") in self.directions:
                    return m.start()
        return None

    def find(self, text: str) -> tuple[int | None, int]:
        ends = [m.start() for m in self.pattern.finditer(text)
                # The speech's own first line is never the next heading (inline: text starts
                # mid-line, right after "NAME: ").
                if (m.start() > 0 or self.style == "line") and self._is_heading(text, m)][:1]
        direction = self._direction_at(text)
        if direction is not None:
            ends.append(direction)
        if ends:
            cut = len(text[: min(ends)].rstrip())
            return cut, cut
        last_line = text.rfind("\n") + 1
        hold = last_line if last_line > 0 and self._could_become_heading(text, last_line) \
            else len(text)
        # Trailing blank lines are shown only once the next line proves to be more speech.
        return None, len(text[:hold].rstrip())
