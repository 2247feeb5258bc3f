"""Questions and answers made from the built-in plays: the data of the chat fine-tuning demo.

`train --sft` teaches a small model, pretrained on the plays, to answer these questions; the
held-out `test` split is the built-in task `shakespeare:questions` (`evaluation.builtin_tasks`,
scored by exact match of the answer's first line), asked of the fine-tuned model as chat
messages and of the base model as `Question: ...\nAnswer:` text after a few solved
examples. Most kinds are read off the passage the
question quotes (a skill learned from the train questions, applied to unseen passages); `play`
must be remembered from pretraining, so results per kind show the difference. Every question
and answer uses only characters of the corpus, so a character-level model can write them.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

from gptscratch.errors import UserError

QUESTION_TYPES: tuple[str, ...] = (
    "speaker", "first", "answers", "first-word", "last-word", "next-word", "play",
)
SPLITS = ("train", "test")
PER_TYPE = {"train": 1200, "test": 40}  # defaults: 8,400 and 280 questions when all kinds fill
TEST_PERCENT = 12  # scenes (and, for `play`, names) whose stable hash falls below it are test
MAX_CHARS = 120  # question + answer: with 4 markers, a conversation fits the main job's 128 ids
SEED = 0

# A speech heading as the corpus writes it (`HAMLET:`, `FIRST WITCH:`, `KING LEWIS XI:`).
_HEADING = re.compile(r"(?P<name>[A-Z][A-Z' .,&-]*[A-Z.]):")
# A line alone that opens a part of a play; a play's title is the line alone before its first.
_SECTION = re.compile(r"(?:ACT|SCENE|PROLOGUE|EPILOGUE|INDUCTION)\b", re.IGNORECASE)
_OPENING = re.compile(r"ACT I|(?:PROLOGUE|INDUCTION)\b.*")
# A plain word: letters, with inner apostrophes or hyphens (`woo'd`, `New-bent`).
_WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*")
_TRAILING = ".,;:!?"


@dataclass(frozen=True)
class Question:
    """One question and its exact answer.

    Attributes:
        kind: one of `QUESTION_TYPES`.
        prompt: the user's message.
        answer: the exact expected answer (compared by `evaluation.tasks.final_answer`).
    """

    kind: str
    prompt: str
    answer: str


@dataclass(frozen=True)
class _Speech:
    """A speech: its heading's name, its spoken lines (up to the first bracketed direction) and
    whether it directly follows another speech (no direction or heading between them)."""

    speaker: str
    lines: tuple[str, ...]
    follows: bool


@dataclass(frozen=True)
class _Scene:
    """The speeches of one scene (or prologue) of `play`, with a key stable across machines."""

    play: str
    key: str
    speeches: tuple[_Speech, ...]


@dataclass(frozen=True)
class _Corpus:
    """The plays read for questions: scenes of each split, the lines the train scenes speak,
    and the names that can be asked about (name -> play)."""

    scenes: dict[str, tuple[_Scene, ...]]
    train_lines: frozenset[str]
    roles: dict[str, str]


# A draft: a question and the corpus lines its prompt shows (to keep test passages held out).
_Draft = tuple[Question, tuple[str, ...]]


def shakespeare_questions(split: str, text: str | None = None,
                          per_type: int | None = None) -> list[Question]:
    """The built-in questions of `split`, made deterministically from the plays.

    The split is fixed: a scene whose stable hash (sha256 of play, scene number and heading)
    falls in the lowest `TEST_PERCENT` % is test, and a test question is dropped if any line it
    shows is also spoken in a train scene; `play` questions split their names the same way. So
    no test prompt, passage or line, and no `play` name, is in train. Questions come grouped by
    kind in `QUESTION_TYPES` order, each kind in a seeded random order (a smaller `per_type`
    gives a prefix of a larger one's); every conversation is at most `MAX_CHARS` characters.

    Args:
        split: "train" or "test".
        text: the plays in the corpus's script layout; defaults to `shakespeare_text()`.
        per_type: questions per kind (fewer where a kind runs out); defaults to `PER_TYPE`.

    Raises:
        UserError: `split` is not "train" or "test", or `per_type` is negative.
    """
    if split not in SPLITS:
        raise UserError(f"split ({split!r}) must be one of {', '.join(SPLITS)}")
    if per_type is not None and per_type < 0:
        raise UserError(f"per_type ({per_type}) must be >= 0; try per_type={PER_TYPE[split]}")
    corpus = _read_corpus(_corpus_text(text))
    count = PER_TYPE[split] if per_type is None else per_type
    return [q for kind in QUESTION_TYPES for q in _questions_of(kind, split, corpus, count)]


def question_conversations(split: str,
                           text: str | None = None) -> list[dict[str, list[dict[str, str]]]]:
    """The questions of `split` as OpenAI-style conversation records, ready to write as JSONL:
    `{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`."""
    return [{"messages": [{"role": "user", "content": q.prompt},
                          {"role": "assistant", "content": q.answer}]}
            for q in shakespeare_questions(split, text)]


def _corpus_text(text: str | None) -> str:
    if text is not None:
        return text
    from gptscratch.data.shakespeare import shakespeare_text  # fetched on first use only

    return shakespeare_text()


def _questions_of(kind: str, split: str, corpus: _Corpus, count: int) -> list[Question]:
    """The first `count` usable drafts of `kind` for `split`, in the maker's seeded order."""
    rng = random.Random(f"{SEED}:{kind}:{split}")
    questions: list[Question] = []
    seen: set[str] = set()
    for question, shown in _MAKERS[kind](corpus, split, rng):
        if len(questions) >= count:
            break
        if (len(question.prompt) + len(question.answer) > MAX_CHARS or question.prompt in seen
                or (split == "test" and not corpus.train_lines.isdisjoint(shown))):
            continue
        seen.add(question.prompt)
        questions.append(question)
    return questions


def _held_out(key: str) -> bool:
    """Whether `key` (a scene's or a name's) is in the test split, by its sha256."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < TEST_PERCENT


# ---------------------------------------------------------------------------------------------
# Reading the plays


@functools.lru_cache(maxsize=2)
def _read_corpus(text: str) -> _Corpus:
    """The plays in `text`, split into train and test scenes."""
    scenes = _read_scenes(text)
    split = {s: tuple(sc for sc in scenes if _held_out(sc.key) == (s == "test")) for s in SPLITS}
    train_lines = frozenset(line for sc in split["train"] for sp in sc.speeches
                            for line in sp.lines)
    return _Corpus(split, train_lines, _roles(scenes))


def _blocks(text: str) -> list[list[str]]:
    """The text's blocks (runs of non-blank lines), each as its stripped lines."""
    return [[line.strip() for line in block.strip().split("\n")]
            for block in re.split(r"\n\s*\n", text) if block.strip()]


def _play_starts(blocks: list[list[str]]) -> set[int]:
    """Where plays start: the first block, and each title, a line alone that is followed by
    `ACT I` or a prologue heading (a line alone too) and is found only once as a line alone
    (which leaves out repeated directions like `Flourish` or `Enter GOWER`)."""
    alone = [b[0] if len(b) == 1 else None for b in blocks]
    counts: dict[str, int] = defaultdict(int)
    for line in alone:
        if line is not None:
            counts[line] += 1
    starts = {0}
    for i, (line, after) in enumerate(pairwise(alone)):
        if (line is not None and after is not None and counts[line] == 1
                and not _SECTION.match(line) and _OPENING.fullmatch(after)):
            starts.add(i)
    return starts


def _read_scenes(text: str) -> list[_Scene]:
    """The scenes of every play in `text`, in order (those without speeches left out)."""
    blocks = _blocks(text)
    starts = _play_starts(blocks)
    scenes: list[_Scene] = []
    play, heading, number = "", "", 0
    speeches: list[_Speech] = []
    for i, block in enumerate(blocks + [[""]]):  # a last empty block ends the last scene
        section = len(block) == 1 and (i in starts or _SECTION.match(block[0]) is not None)
        if section or i == len(blocks):
            if speeches:
                scenes.append(_Scene(play, f"{play}\n{number}\n{heading}", tuple(speeches)))
            speeches = []
            if i in starts:
                play, number = block[0], 0
            heading, number = block[0], number + 1
        elif name := _speaker_of(block):
            follows = i > 0 and _speaker_of(blocks[i - 1]) is not None
            speeches.append(_Speech(name, _spoken(block[1:]), follows))
    return scenes


def _speaker_of(block: list[str]) -> str | None:
    """The speaker of a speech block (a heading line, then the speech), or None."""
    match = _HEADING.fullmatch(block[0])
    return match["name"] if match and len(block) > 1 else None


def _spoken(lines: list[str]) -> tuple[str, ...]:
    """A speech's lines up to the first stage direction written in brackets (`[Aside]`)."""
    spoken: list[str] = []
    for line in lines:
        if "[" in line or "]" in line:
            break
        spoken.append(line)
    return tuple(spoken)


def _roles(scenes: list[_Scene]) -> dict[str, str]:
    """The names that `play` questions ask about, and their plays: a speaker heading of one play
    only, for one speaker (no `&`), with a name of its own: a word in no other play's speaker
    headings, never written in lower case in the speeches, and said (`Hamlet`) in its play's.
    So `HAMLET` and `LADY MACBETH` count, and `FIRST LORD`, `KING` or `SECOND FISHERMAN` do
    not."""
    plays: dict[str, set[str]] = defaultdict(set)
    said: dict[str, set[str]] = defaultdict(set)
    for scene in (sc for sc in scenes if sc.play):
        for speech in scene.speeches:
            plays[speech.speaker].add(scene.play)
            said[scene.play].update(w for line in speech.lines for w in _WORD.findall(line))
    word_plays: dict[str, set[str]] = defaultdict(set)
    for name, found in plays.items():
        for word in name.split():
            word_plays[word].update(found)
    lower = {w for words in said.values() for w in words if w.islower()}

    def own(word: str, play: str) -> bool:
        return (word_plays[word] == {play} and word.lower() not in lower
                and word.capitalize() in said[play])

    return {name: play for name, (play, *more) in sorted(plays.items())
            if not more and "&" not in name and any(own(w, play) for w in name.split())}


def _word(token: str) -> str | None:
    """`token` without its trailing punctuation, if that leaves a plain word; else None."""
    word = token.rstrip(_TRAILING)
    return word if _WORD.fullmatch(word) else None


# ---------------------------------------------------------------------------------------------
# The kinds of question: each maker yields drafts in a seeded random order.


def _speaker(corpus: _Corpus, split: str, rng: random.Random) -> Iterator[_Draft]:
    """"Who is speaking in this passage?" over a speech's heading and first one to three lines:
    the heading's name."""
    speeches = [sp for sc in corpus.scenes[split] for sp in sc.speeches if sp.lines]
    rng.shuffle(speeches)
    for speech in speeches:
        for n in (3, 2, 1):
            shown = speech.lines[:n]
            prompt = "Who is speaking in this passage?\n\n" + _passage(speech.speaker, shown)
            if len(prompt) + len(speech.speaker) <= MAX_CHARS or n == 1:
                yield Question("speaker", prompt, speech.speaker), shown
                break


def _pairs(corpus: _Corpus, split: str, rng: random.Random) -> list[tuple[_Speech, _Speech]]:
    """Two speeches in a row, by two different speakers, in a seeded random order."""
    pairs = [(a, b) for sc in corpus.scenes[split] for a, b in pairwise(sc.speeches)
             if b.follows and a.speaker != b.speaker and a.lines and b.lines]
    rng.shuffle(pairs)
    return pairs


def _two_speeches(question: str, a: _Speech, b: _Speech,
                  answer: str) -> tuple[str, tuple[str, ...]]:
    """`question` over both speeches, up to two lines of each, as many as fit `MAX_CHARS`."""
    for n in (2, 1):
        shown = a.lines[:n] + b.lines[:n]
        prompt = f"{question}\n\n{_passage(a.speaker, a.lines[:n])}\n\n" \
            + _passage(b.speaker, b.lines[:n])
        if len(prompt) + len(answer) <= MAX_CHARS:
            break
    return prompt, shown


def _first(corpus: _Corpus, split: str, rng: random.Random) -> Iterator[_Draft]:
    """"Who speaks first here?" over two speeches in a row: the first one's speaker."""
    for a, b in _pairs(corpus, split, rng):
        prompt, shown = _two_speeches("Who speaks first here?", a, b, a.speaker)
        yield Question("first", prompt, a.speaker), shown


def _answers(corpus: _Corpus, split: str, rng: random.Random) -> Iterator[_Draft]:
    """"Who answers NAME here?" over two speeches in a row: the second one's speaker."""
    for a, b in _pairs(corpus, split, rng):
        prompt, shown = _two_speeches(f"Who answers {a.speaker} here?", a, b, b.speaker)
        yield Question("answers", prompt, b.speaker), shown


def _lines(corpus: _Corpus, split: str, rng: random.Random) -> list[str]:
    """The split's distinct spoken lines of four words or more, in a seeded random order."""
    lines = sorted({line for sc in corpus.scenes[split] for sp in sc.speeches
                    for line in sp.lines if len(line.split()) >= 4})
    rng.shuffle(lines)
    return lines


def _first_word(corpus: _Corpus, split: str, rng: random.Random) -> Iterator[_Draft]:
    """"What is the first word of this line?": the word, without punctuation."""
    for line in _lines(corpus, split, rng):
        if word := _word(line.split()[0]):
            yield Question("first-word", f"What is the first word of this line?\n\n{line}",
                           word), (line,)


def _last_word(corpus: _Corpus, split: str, rng: random.Random) -> Iterator[_Draft]:
    """"What is the last word of this line?": the word, without punctuation."""
    for line in _lines(corpus, split, rng):
        if word := _word(line.split()[-1]):
            yield Question("last-word", f"What is the last word of this line?\n\n{line}",
                           word), (line,)


def _next_word(corpus: _Corpus, split: str, rng: random.Random) -> Iterator[_Draft]:
    """"What word comes after WORD in this line?", for a word found once in the line and
    followed by a plain word: that word, without punctuation."""
    for line in _lines(corpus, split, rng):
        words = [_word(token) for token in line.split()]
        folded = [token.rstrip(_TRAILING).casefold() for token in line.split()]
        pairs = [(w, after) for w, after in pairwise(words)
                 if w and after and folded.count(w.casefold()) == 1]
        if pairs:
            word, after = rng.choice(pairs)
            prompt = f"What word comes after {word} in this line?\n\n{line}"
            yield Question("next-word", prompt, after), (line,)


def _play(corpus: _Corpus, split: str, rng: random.Random) -> Iterator[_Draft]:
    """"In which play does NAME speak?" (memory: the play is not in the prompt): its title as
    the corpus writes it. Names are split by their own hash."""
    names = [n for n in corpus.roles if _held_out(f"name\n{n}") == (split == "test")]
    rng.shuffle(names)
    for name in names:
        yield Question("play", f"In which play does {name} speak?", corpus.roles[name]), ()


def _passage(speaker: str, lines: Sequence[str]) -> str:
    """A speech as the corpus writes it: the heading, then its lines."""
    return f"{speaker}:\n" + "\n".join(lines)


_MAKERS: dict[str, Callable[[_Corpus, str, random.Random], Iterator[_Draft]]] = {
    "speaker": _speaker, "first": _first, "answers": _answers, "first-word": _first_word,
    "last-word": _last_word, "next-word": _next_word, "play": _play,
}
