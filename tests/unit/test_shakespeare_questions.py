"""The built-in questions of the chat fine-tuning demo: answers checked against a small
hand-made script of three plays (every kind, the title and speaker rules, held-out passages),
determinism across processes, the exact-match rule, lengths, characters and the few-shot
layout; one test reads the real corpus if the set-up cached it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SETUP_CACHE

import gptscratch.data.shakespeare_questions as questions_module
from gptscratch.data.shakespeare_questions import (
    PER_TYPE,
    QUESTION_TYPES,
    Question,
    question_conversations,
    shakespeare_questions,
)
from gptscratch.errors import UserError


@pytest.fixture(autouse=True)
def _room_for_the_small_plays(request: pytest.FixtureRequest,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-made plays' lines are longer than the real corpus's typical ones: their
    two-speech questions need more than the main job's 120 characters. The real-corpus test
    keeps the real limit."""
    if not any(k in request.node.name for k in ("real_corpus", "fresh_process")):
        monkeypatch.setattr(questions_module, "MAX_CHARS", 240)

# Three plays in the corpus's layout. Its scenes `SCENE V. Inverness...` and `SCENE IV. The
# platform.` hash into the test split, and so do the names MALCOLM and ROSENCRANTZ; SEYTON's
# line is also spoken in a train scene, so no test question may show it. `Flourish` is a line
# alone twice (a direction, not a title) though once it comes before `ACT I`.
PLAYS = """\
Macbeth

ACT I

SCENE I. A desert place.

Thunder and lightning. Enter three Witches

FIRST WITCH:
When shall we three meet again
In thunder, lightning, or in rain?

SECOND WITCH:
When the hurlyburly's done,
When the battle's lost and won.

FIRST WITCH:
Where the place? Upon the heath, to meet with Macbeth.

Exeunt

SCENE V. Inverness. Macbeth's castle.

LADY MACBETH:
Glamis thou art, and Cawdor; and shalt be
What thou art promised: yet do I fear thy nature.

SEYTON:
My good lord, the messenger is come again.

LADY MACBETH:
He brings great news. Give him tending;

Enter MACBETH

MACBETH:
My dearest love, Duncan comes here to-night.

LADY MACBETH:
And when goes hence?

MACBETH:
To-morrow, as he purposes, with Malcolm his son.

SCENE II. A camp near Forres.

Enter DUNCAN, MALCOLM, and a bleeding Sergeant

DUNCAN:
What bloody man is that? He can report,
As seemeth by his plight, of the revolt.

MALCOLM:
This is the sergeant who fought for brave Macbeth.
Hail, brave friend! Say to the king the knowledge of the broil.

SERGEANT:
For brave Macbeth--well he deserves that name--
Disdaining fortune, with his brandish'd steel,
Which smoked with bloody execution.

Exit Sergeant

DUNCAN:
Go, get him surgeons, and tell Malcolm I know not what, nor know I why.

SCENE III. A heath near Forres.

MACBETH:
So foul and fair a day I have not seen.

BANQUO:
How far is't call'd to Forres? What are these
So wither'd and so wild in their attire?

MACBETH:
Speak, if you can: what are you, Banquo asks.

FIRST LORD:
My good lord, the messenger is come again.

Hamlet

PROLOGUE

PROLOGUE:
For us, and for our tragedy,
Here stooping to your clemency,
We beg your hearing patiently.

Flourish

ACT I

SCENE I. Elsinore. A platform before the castle.

BERNARDO:
Who's there?

FRANCISCO:
Nay, answer me: stand, and unfold yourself, Bernardo.

BERNARDO:
Long live the king! Francisco, you come most carefully upon your hour.

FRANCISCO:
For this relief much thanks: 'tis bitter cold,
And I am sick at heart.

SCENE II. A room of state in the castle.

Enter the KING, QUEEN, HAMLET, ROSENCRANTZ, and Lords

KING CLAUDIUS:
Though yet of Hamlet our dear brother's death
The memory be green, and that it us befitted
To bear our hearts in grief and our whole kingdom
To be contracted in one brow of woe,
Yet so far hath discretion fought with nature
That we with wisest sorrow think on him.

HAMLET:
A little more than kin, and less than kind.
[Aside] Not so, my lord; I am too much i' the sun.
This line comes after a direction and is never asked about.

QUEEN GERTRUDE:
Good Hamlet, cast thy nighted colour off,
And let thine eye look like a friend on Denmark.

ROSENCRANTZ:
My lord, we were sent for; Rosencrantz and Guildenstern attend.

FIRST LORD:
My good lord, the messenger is come again.

HAMLET:
Seems, madam! nay it is; I know not seems. 'Tis not alone my inky cloak, good mother, \
nor customary suits of solemn black, nor windy suspiration of forced breath, no, nor the \
fruitful river in the eye, nor the dejected haviour of the visage.

SCENE IV. The platform.

HAMLET:
The air bites shrewdly; it is very cold.

HORATIO:
It is a nipping and an eager air, my lord Hamlet.

HAMLET:
What hour now?

HORATIO:
I think it lacks of twelve, good Hamlet.

MARCELLUS:
No, it is struck, and Horatio hears it.

Exeunt

Othello

ACT I

SCENE I. Venice. A street.

RODERIGO:
Tush! never tell me; I take it much unkindly
That thou, Iago, who hast had my purse

IAGO:
'Sblood, but you will not hear me, Roderigo:
If ever I did dream of such a matter, Abhor me.

RODERIGO:
Thou told'st me thou didst hold him in thy hate.

IAGO:
Despise me, if I do not. Three great ones of the city,
In personal suit to make me his lieutenant,

SCENE II. Another street.

Enter OTHELLO, IAGO, and Attendants with torches

OTHELLO:
Let him do his spite: my services which I have done
Shall out-tongue his complaints. Tis yet to know, Iago.

Flourish

IAGO:
But, I pray you, sir, are you fast married?

MESSENGER:
The Ottomites, reverend and gracious, are come.

SCENE III. A council-chamber.

DUKE OF VENICE:
There is no composition in these news
That gives them credit, Othello.

OTHELLO:
Most potent, grave, and reverend signiors,
My very noble and approved good masters,

BRABANTIO:
She is abused, stol'n from me, and corrupted
By spells and medicines bought of mountebanks;

IAGO:
Virtue! a fig! 'tis in ourselves that we are thus or thus. Our bodies are our gardens, \
to the which
our wills are gardeners: so that if we will plant nettles, or sow lettuce, set hyssop and \
weed up
thyme, supply it with one gender of herbs, or distract it with many, why, the power lies \
in our wills.

Exeunt
"""

ALL = 1000  # per_type large enough for every question the small plays give


def _questions(split: str) -> list[Question]:
    return shakespeare_questions(split, PLAYS, per_type=ALL)


def _of(kind: str, split: str | None = None) -> list[Question]:
    splits = [split] if split else ["train", "test"]
    return [q for s in splits for q in _questions(s) if q.kind == kind]


def _passage(question: Question) -> str:
    return question.prompt.split("\n\n", 1)[1]


def _speeches(passage: str) -> list[tuple[str, list[str]]]:
    """(heading name, lines) of each speech in a question's passage."""
    blocks = [b.split("\n") for b in passage.split("\n\n")]
    return [(b[0].removesuffix(":"), b[1:]) for b in blocks]


def _in_a_row(passage: str) -> bool:
    """Whether the passage's two speeches open two speeches in a row of the plays."""
    (a, a_lines), (b, b_lines) = _speeches(passage)
    pattern = (rf"\n\n{re.escape(a)}:\n{re.escape(chr(10).join(a_lines))}(?:\n[^\n]+)*"
               rf"\n\n{re.escape(b)}:\n{re.escape(chr(10).join(b_lines))}\n")
    return re.search(pattern, PLAYS) is not None


def test_every_kind_is_asked_in_both_splits() -> None:
    for split in ("train", "test"):
        assert {q.kind for q in _questions(split)} == set(QUESTION_TYPES), split
    # Grouped by kind, in QUESTION_TYPES order.
    kinds = [q.kind for q in _questions("train")]
    assert kinds == sorted(kinds, key=QUESTION_TYPES.index)


def test_the_same_questions_in_a_fresh_process_whatever_its_hash_seed(tmp_path: Path) -> None:
    path = tmp_path / "plays.txt"
    path.write_text(PLAYS, encoding="utf-8")
    code = ("import dataclasses, json, sys; from pathlib import Path; "
            "from gptscratch.data.shakespeare_questions import shakespeare_questions as q; "
            "text = Path(sys.argv[1]).read_text(encoding='utf-8'); "
            "print(json.dumps([[dataclasses.astuple(x) for x in q(s, text, per_type=1000)] "
            "for s in ('train', 'test')]))")
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                             text=True, env=env, check=True).stdout
        runs.append(json.loads(out))
    here = [[list((x.kind, x.prompt, x.answer)) for x in _questions(s)] for s in ("train", "test")]
    assert runs[0] == runs[1] == here


def test_the_test_split_is_held_out() -> None:
    train, test = _questions("train"), _questions("test")
    assert not {q.prompt for q in train} & {q.prompt for q in test}
    train_lines = {line for q in train if q.kind != "play" for line in _passage(q).split("\n")}
    for q in test:
        if q.kind != "play":
            shown = [line for _, lines in _speeches(_passage(q)) for line in lines]
            assert not train_lines.intersection(shown), q
    # The test scenes' speeches, and the test names, are the ones the fixture says.
    assert {name for q in _of("speaker", "test") for name in [q.answer]} == {
        "LADY MACBETH", "MACBETH", "HAMLET", "HORATIO", "MARCELLUS"}
    assert {q.prompt for q in _of("play", "test")} == {
        "In which play does MALCOLM speak?", "In which play does ROSENCRANTZ speak?"}
    # SEYTON's line is in a test scene but also spoken in a train one: it is never a test line.
    assert not any("the messenger is come again" in q.prompt for q in test)
    assert any("the messenger is come again" in q.prompt for q in train)


def test_speaker_questions_name_the_heading_of_a_speech_of_the_plays() -> None:
    questions = _of("speaker")
    assert questions
    for q in questions:
        assert q.prompt.startswith("Who is speaking in this passage?\n\n")
        assert _passage(q).startswith(q.answer + ":\n")
        assert "\n\n" + _passage(q) + "\n" in PLAYS  # a speech's heading and first lines
    prologue = "PROLOGUE:\nFor us, and for our tragedy,\nHere stooping to your clemency,\n" \
        "We beg your hearing patiently."
    assert Question("speaker", "Who is speaking in this passage?\n\n" + prologue,
                    "PROLOGUE") in questions
    # A bracketed direction ends what is shown of HAMLET's speech.
    assert not any("[" in q.prompt or "never asked about" in q.prompt for q in _questions("train"))


def test_first_and_answers_questions_take_two_speeches_in_a_row() -> None:
    for kind in ("first", "answers"):
        questions = _of(kind)
        assert questions
        for q in questions:
            (first, _), (second, _) = _speeches(_passage(q))
            assert first != second
            assert _in_a_row(_passage(q)), q
            if kind == "first":
                assert q.prompt.startswith("Who speaks first here?\n\n") and q.answer == first
            else:
                assert q.prompt.startswith(f"Who answers {first} here?\n\n")
                assert q.answer == second
    # `Enter MACBETH` stands between LADY MACBETH's and MACBETH's speeches: not a pair.
    assert not any(q.prompt.endswith("My dearest love, Duncan comes here to-night.")
                   for q in _of("first") + _of("answers"))


def test_word_questions_give_the_word_without_its_punctuation() -> None:
    def asked(kind: str) -> dict[str, str]:
        return {_passage(q): q.answer for q in _of(kind)}

    last, first = asked("last-word"), asked("first-word")
    assert last["What thou art promised: yet do I fear thy nature."] == "nature"
    assert last["My dearest love, Duncan comes here to-night."] == "to-night"
    assert last["Disdaining fortune, with his brandish'd steel,"] == "steel"
    assert last["How far is't call'd to Forres? What are these"] == "these"
    assert first["To-morrow, as he purposes, with Malcolm his son."] == "To-morrow"
    assert first["Nay, answer me: stand, and unfold yourself, Bernardo."] == "Nay"
    # No plain word to give: `name--`, `'tis`, `'Sblood,`; too short: `What hour now?`.
    assert "For brave Macbeth--well he deserves that name--" not in last
    assert "For this relief much thanks: 'tis bitter cold," in first
    assert "For this relief much thanks: 'tis bitter cold," in last
    assert "'Sblood, but you will not hear me, Roderigo:" not in first
    assert "What hour now?" not in first and "What hour now?" not in last
    lines = {line for line in PLAYS.split("\n")}
    assert set(last) <= lines and set(first) <= lines


def test_next_word_questions_ask_about_a_word_found_once_in_the_line() -> None:
    questions = _of("next-word")
    assert questions
    for q in questions:
        word = q.prompt.removeprefix("What word comes after ").split(" in this line?")[0]
        tokens = [t.rstrip(".,;:!?") for t in _passage(q).split()]
        assert [t.casefold() for t in tokens].count(word.casefold()) == 1, q
        assert tokens[tokens.index(word) + 1] == q.answer, q
    duncan = [q for q in questions if "nor know I why" in q.prompt]
    assert duncan and not any("after know " in q.prompt for q in duncan)  # `know` is there twice


def test_play_questions_ask_about_names_of_one_play_only() -> None:
    asked = {q.prompt.removeprefix("In which play does ").removesuffix(" speak?"): q.answer
             for q in _of("play")}
    assert asked == {"BANQUO": "Macbeth", "DUNCAN": "Macbeth", "LADY MACBETH": "Macbeth",
                     "MACBETH": "Macbeth", "MALCOLM": "Macbeth", "BERNARDO": "Hamlet",
                     "FRANCISCO": "Hamlet", "HAMLET": "Hamlet", "HORATIO": "Hamlet",
                     "ROSENCRANTZ": "Hamlet", "IAGO": "Othello", "OTHELLO": "Othello",
                     "RODERIGO": "Othello"}
    # Left out: FIRST LORD (two plays), MESSENGER (written in lower case), SEYTON and
    # MARCELLUS (their names never said in their plays), FIRST WITCH (no name of its own).


def test_conversations_are_short_and_use_only_the_corpus_characters() -> None:
    questions = _questions("train") + _questions("test")
    assert all(len(q.prompt) + len(q.answer) <= questions_module.MAX_CHARS for q in questions)
    assert set("".join(q.prompt + q.answer for q in questions)) <= set(PLAYS)
    # Three lines of KING CLAUDIUS are shown, but fewer of IAGO's long prose lines, and
    # HAMLET's longest line never.
    def shown(opening: str) -> list[int]:
        return [len(_speeches(_passage(q))[0][1]) for q in _of("speaker")
                if _speeches(_passage(q))[0][1][0].startswith(opening)]

    assert shown("Though yet of Hamlet") == [3]
    assert shown("Virtue! a fig!") == [1]
    assert not any("inky cloak" in q.prompt for q in questions)


def test_per_type_caps_each_kind_and_gives_a_prefix_of_the_full_list() -> None:
    two = shakespeare_questions("train", PLAYS, per_type=2)
    assert [q.kind for q in two] == [k for k in QUESTION_TYPES for _ in range(2)]
    full = _questions("train")
    for kind in QUESTION_TYPES:
        assert [q for q in two if q.kind == kind] == [q for q in full if q.kind == kind][:2]
    assert shakespeare_questions("train", PLAYS, per_type=0) == []
    with pytest.raises(UserError, match="split .'dev'. must be one of train, test"):
        shakespeare_questions("dev", PLAYS)
    with pytest.raises(UserError, match="per_type"):
        shakespeare_questions("train", PLAYS, per_type=-1)


def test_conversations_are_openai_style_records() -> None:
    records = question_conversations("test", PLAYS)
    questions = shakespeare_questions("test", PLAYS)
    assert len(records) == len(questions) > 0
    assert records[0] == {"messages": [{"role": "user", "content": questions[0].prompt},
                                       {"role": "assistant", "content": questions[0].answer}]}
    assert json.loads(json.dumps(records)) == records


def test_the_built_in_questions_of_the_real_corpus(shared_cache: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts per kind, the character rule and the held-out split, on the built-in plays."""
    if not (SETUP_CACHE / "shakespeare" / "shakespeare.txt").is_file():
        pytest.skip("the built-in corpus is not cached (run the README's set-up)")
    monkeypatch.setenv("GPTSCRATCH_CACHE", str(shared_cache))
    from gptscratch.data.shakespeare import shakespeare_text

    text = shakespeare_text()
    train, test = shakespeare_questions("train"), shakespeare_questions("test")
    for split, questions in (("train", train), ("test", test)):
        counts = {k: sum(q.kind == k for q in questions) for k in QUESTION_TYPES}
        assert all(counts[k] == PER_TYPE[split] for k in QUESTION_TYPES if k != "play"), counts
        # `play` is bounded by the names found in one play only (384 of them in train).
        assert counts["play"] >= min(0.8 * PER_TYPE[split], 300), counts
    assert set("".join(q.prompt + q.answer for q in train + test)) <= set(text)
    assert not any(c.isdigit() for q in train + test for c in q.prompt)
    assert not {q.prompt for q in train} & {q.prompt for q in test}
    train_lines = {line for q in train if q.kind != "play" for line in _passage(q).split("\n")}
    assert not any(train_lines.intersection(_passage(q).split("\n"))
                   for q in test if q.kind in ("first-word", "last-word", "next-word"))
    assert len({q.answer for q in train if q.kind == "play"}) >= 30  # titles of most plays
    assert all(q.answer + "\n\n" in text for q in train if q.kind == "play")
