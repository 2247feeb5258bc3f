"""Benchmark tasks made from the built-in plays, so `eval --task shakespeare` runs offline.

All three are drawn (with a fixed seed) from the part of the built-in corpus that `prepare`
holds out for validation (its last tenth, from a line start), so a model trained on the
built-in corpus has never seen them:
- `shakespeare:next-line` (multiple choice, chance 1/4): a speech's opening lines; which of
  four lines comes next, the true one or three lines from elsewhere in the held-out plays?
- `shakespeare:speaker` (schema, chance 1/4): a speech, then a name heading the next; after
  which of four speakers of that scene is the next speech's first line likeliest?
- `shakespeare:last-word` (language modelling, chance 0): a line with the lines before it; does
  greedy decoding give its last word?
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from gptscratch.errors import UserError
from gptscratch.evaluation.task_files import (
    GENERATIVE,
    LANGUAGE_MODELING,
    MULTIPLE_CHOICE,
    SCHEMA,
    Item,
    Task,
    question_item,
)

PREFIX = "shakespeare"
ITEMS = 200  # per task
SEED = 0
VAL_FRACTION = 0.1  # prepare's default: the built-in tasks come from its val split
_NAME = re.compile(r"^([A-Z][A-Z' .,&-]*[A-Z.]):$")
_LAST_WORD = re.compile(r"^(.*\S)\s+([A-Za-z']+)[^A-Za-z']*$")
SCENE = 40  # speeches either side from which the speaker task draws other speakers


@dataclass(frozen=True)
class Speech:
    speaker: str
    lines: tuple[str, ...]

    def text(self) -> str:
        return f"{self.speaker}:\n" + "\n".join(self.lines) + "\n"


def held_out_speeches() -> list[Speech]:
    """The speeches of the built-in corpus's val split, in order (stage directions dropped)."""
    from gptscratch.data.shakespeare import shakespeare_text
    from gptscratch.data.sources import line_cut

    text = shakespeare_text()
    speeches = []
    for block in text[line_cut(text, VAL_FRACTION):].split("\n\n"):
        lines = [line for line in block.strip("\n").split("\n") if line.strip()]
        if len(lines) >= 2 and (match := _NAME.match(lines[0])):
            speeches.append(Speech(match.group(1), tuple(lines[1:])))
    return speeches


def _spoken(line: str) -> bool:
    """Not a stage direction inside a speech (`[Aside]`): those are no test of the model."""
    return not line.lstrip().startswith("[")


def next_line(speeches: list[Speech], rng: random.Random) -> list[Item]:
    every_line = [line for s in speeches for line in s.lines if _spoken(line)]
    candidates = [(s, k) for s in speeches for k in range(1, len(s.lines)) if _spoken(s.lines[k])]
    items = []
    for speech, k in rng.sample(candidates, min(ITEMS, len(candidates))):
        context = f"{speech.speaker}:\n" + "\n".join(speech.lines[:k]) + "\n"
        true = speech.lines[k]
        others: list[str] = []
        while len(others) < 3:
            line = rng.choice(every_line)
            if line != true and line not in others:
                others.append(line)
        choices = [true, *others]
        rng.shuffle(choices)
        items.append(Item((context,) * 4, tuple(c + "\n" for c in choices), choices.index(true),
                          f"{PREFIX}:next-line", delimiter=""))
    return items


def speaker(speeches: list[Speech], rng: random.Random) -> list[Item]:
    items: list[Item] = []
    order = list(range(1, len(speeches)))
    rng.shuffle(order)
    for i in order:
        if len(items) == ITEMS:
            break
        true = speeches[i].speaker
        if not _spoken(speeches[i].lines[0]):
            continue
        near = {s.speaker for s in speeches[max(0, i - SCENE):i + SCENE]} - {true}
        if len(near) < 3:
            continue
        names = [true, *rng.sample(sorted(near), 3)]
        rng.shuffle(names)
        before = speeches[i - 1].text() + "\n"
        items.append(Item(tuple(f"{before}{name}:\n" for name in names),
                          (speeches[i].lines[0] + "\n",) * 4, names.index(true),
                          f"{PREFIX}:speaker", delimiter=""))
    return items


def last_word(speeches: list[Speech], rng: random.Random) -> list[Item]:
    candidates = [(s, k) for s in speeches for k, line in enumerate(s.lines)
                  if len(line.split()) >= 4 and _spoken(line) and _LAST_WORD.match(line)]
    items = []
    for speech, k in rng.sample(candidates, min(ITEMS, len(candidates))):
        match = _LAST_WORD.match(speech.lines[k])
        assert match is not None
        before = "".join(line + "\n" for line in speech.lines[max(0, k - 2):k])
        items.append(Item((f"{speech.speaker}:\n{before}{match.group(1)}",),
                          (match.group(2),), 0, f"{PREFIX}:last-word"))
    return items


BUILTIN: dict[str, tuple[str, Callable[[list[Speech], random.Random], list[Item]]]] = {
    "next-line": (MULTIPLE_CHOICE, next_line),
    "speaker": (SCHEMA, speaker),
    "last-word": (LANGUAGE_MODELING, last_word),
}


QUESTIONS = "questions"  # the built-in instruction set's test questions, a task per kind


def is_builtin(name: str) -> bool:
    return name == PREFIX or name.startswith(PREFIX + ":")


def builtin_tasks(name: str) -> list[Task]:
    """`shakespeare` (the three above) or one of them, `shakespeare:next-line` and so on;
    `shakespeare:questions` (the held-out questions of the built-in instruction set, a
    generative task per kind, `data.shakespeare_questions`) or one kind of them,
    `shakespeare:questions-speaker`."""
    wanted = list(BUILTIN) if name == PREFIX else [name.removeprefix(PREFIX + ":")]
    if wanted[0] == QUESTIONS or wanted[0].startswith(QUESTIONS + "-"):
        return question_tasks(name)
    for task in wanted:
        if task not in BUILTIN:
            known = ", ".join(f"{PREFIX}:{t}" for t in [*BUILTIN, QUESTIONS])
            raise UserError(f"no built-in task '{name}'; the built-in tasks are {PREFIX} (all "
                            f"of them), {known}; for a file named so, write ./{name}")
    speeches = held_out_speeches()
    tasks = []
    for task in wanted:
        kind, make = BUILTIN[task]
        items = make(speeches, random.Random(f"{SEED}:{task}"))
        tasks.append(Task(f"{PREFIX}:{task}", kind, tuple(items), "built-in", f"built-in {kind}"))
    return tasks



def question_tasks(name: str) -> list[Task]:
    """The built-in instruction set's test split as generative tasks, one per question kind:
    exact match of the answer's first line (`tasks.final_answer`)."""
    from gptscratch.data.shakespeare_questions import QUESTION_TYPES, shakespeare_questions

    kind = name.removeprefix(f"{PREFIX}:{QUESTIONS}").removeprefix("-")
    if kind and kind not in QUESTION_TYPES:
        known = ", ".join(f"{PREFIX}:{QUESTIONS}-{k}" for k in QUESTION_TYPES)
        raise UserError(f"no built-in task '{name}'; the question tasks are "
                        f"{PREFIX}:{QUESTIONS} (all of them), {known}")
    questions = shakespeare_questions("test")
    tasks = []
    for k in [kind] if kind else QUESTION_TYPES:
        items = [question_item(q.prompt, q.answer, f"{PREFIX}:{QUESTIONS}-{k}:{i + 1}")
                 for i, q in enumerate(q for q in questions if q.kind == k)]
        tasks.append(Task(f"{PREFIX}:{QUESTIONS}-{k}", GENERATIVE, tuple(items), "built-in",
                          "built-in question / answer"))
    return tasks
