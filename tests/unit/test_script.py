"""Script mode: finding speakers, opening a speech, and stopping where the next one begins."""

from __future__ import annotations

from pathlib import Path

from test_sampling import Letters, _Scripted

from gptscratch.checkpoints.load import LoadedModel
from gptscratch.generation.config import GenerationConfig
from gptscratch.generation.script import (
    NextSpeakerStop,
    ScriptFormat,
    find_script_format,
    speaker_prompt,
)
from gptscratch.generation.stream import stream_chunks

PLAY = """Romeo and Juliet

ACT I

ROMEO:
But soft, what light through yonder window breaks?

JULIET:
O Romeo, Romeo!

ROMEO:
Shall I hear more?

Enter NURSE

JULIET:
Anon, good nurse!

NURSE:
Madam!

NURSE:
Your mother calls.
"""

TV = """JERRY: What's the deal with airline food?
GEORGE: I don't know.
JERRY: Nobody knows.
ELAINE: Hello!
GEORGE: Hi Elaine.
ELAINE: Bye.
"""


def test_line_style_speakers_are_found() -> None:
    script = find_script_format(PLAY)
    assert script is not None and script.style == "line"
    assert script.speakers == {"ROMEO": 2, "JULIET": 2, "NURSE": 2}
    assert script.resolve("juliet") == "JULIET" and script.resolve("Hamlet") is None


def test_inline_style_speakers_are_found() -> None:
    script = find_script_format(TV)
    assert script is not None and script.style == "inline"
    assert set(script.speakers) == {"JERRY", "GEORGE", "ELAINE"}


def test_prose_is_not_a_script() -> None:
    assert find_script_format("It was a dark and stormy night.\nNote: rain.\n" * 20) is None


def test_speaker_prompt_opens_a_speech() -> None:
    assert speaker_prompt("ROMEO:\nHello.\n", "JULIET", "line") == "ROMEO:\nHello.\n\nJULIET:\n"
    assert speaker_prompt("\n", "JULIET", "line") == "JULIET:\n"
    assert speaker_prompt("JERRY: Hi.", "GEORGE", "inline") == "JERRY: Hi.\nGEORGE: "


def test_next_heading_cuts_the_speech() -> None:
    stop = NextSpeakerStop(ScriptFormat("line", {"ROMEO": 3, "JULIET": 3}))
    text = "Good morrow.\nHow now?\n\nJULIET:\nHi"
    assert stop.find(text) == (len("Good morrow.\nHow now?"),) * 2
    # A half-written heading and the blank line before it are held back...
    assert stop.find("Good morrow.\n\nJUL") == (None, len("Good morrow."))
    # ...but a line that cannot become a known name is shown.
    assert stop.find("Good morrow.\nI") == (None, len("Good morrow.\nI"))
    # With no known cast, any all-capitals heading counts.
    generic = NextSpeakerStop(None)
    assert generic.find("Yes.\n\nFIRST LORD:\nNo.")[0] == len("Yes.")
    assert generic.find("Yes.\nNot a heading:\n")[0] is None


def test_inline_heading_cuts_the_speech() -> None:
    stop = NextSpeakerStop(ScriptFormat("inline", {"JERRY": 3, "GEORGE": 3}))
    assert stop.find("Nobody knows.\nGEORGE: Right.") == (len("Nobody knows."),) * 2
    assert stop.find("Nobody knows.\nGEO")[1] == len("Nobody knows.")


def test_streamed_speech_never_shows_the_next_heading() -> None:
    codec = Letters(sorted(set(PLAY + "Hush")))
    speech = "Anon!\n\nROMEO:\nHush."
    model = _Scripted(codec.encode(speech), len(codec.pieces)).eval()
    loaded = LoadedModel(model, codec)  # type: ignore[arg-type]
    config = GenerationConfig(max_new_tokens=len(speech), temperature=0.0,
                              until_next_speaker=True)
    chunks = stream_chunks(loaded, "JULIET:\n", config, find_script_format(PLAY))
    pieces = [c.text for c in chunks if c.text]
    assert "".join(pieces) == "Anon!"
    assert not any("R" in p or "\n" in p for p in pieces)


def test_invented_speakers_end_the_speech_too() -> None:
    """Models invent speakers; a heading in the corpus's style ends the speech all the same."""
    # Names in capitals, of up to three words, as in the built-in corpus.
    caps = NextSpeakerStop(ScriptFormat("line", {"ROMEO": 5, "FIRST WITCH": 3,
                                                 "DUKE OF YORK": 2}))
    speech = "Farewell, good nurse.\nI go."
    for invented in ("HERMAN", "MISTRESS OF SYRACUSE", "FIRST CITIZEN"):
        assert caps.find(f"{speech}\n\n{invented}:\nWhat?")[0] == len(speech), invented
    # Not headings: a name-like line without the blank line before it, a colon inside a
    # speech, lower case in an all-capitals cast, and more words than any name has.
    for line in ("\nHERMAN:\n", "\n\nThus says he:\n", "\n\nHerman:\n",
                 "\n\nTHE KING OF ALL THE WIDE WORLD HERE:\n"):
        assert caps.find(speech + line + "More.")[0] is None, line
    # A mixed-case cast (as Tiny Shakespeare's "First Citizen", "MENENIUS").
    mixed = NextSpeakerStop(ScriptFormat("line", {"First Citizen": 9, "MENENIUS": 4}))
    assert mixed.find(f"{speech}\n\nThird Lord:\nAy.")[0] == len(speech)
    assert mixed.find(f"{speech}\n\nAnd thus:\nAy.")[0] is None  # "thus" is no name word


def test_a_half_written_invented_heading_is_held_back() -> None:
    stop = NextSpeakerStop(find_script_format(PLAY))
    assert stop.find("Go.\n\nHER") == (None, len("Go."))
    assert stop.find("Go.\n\nHERMAN:") == (None, len("Go."))
    assert stop.find("Go.\n\nHer eyes") == (None, len("Go.\n\nHer eyes"))  # speech goes on


def test_the_name_shape_is_learned_from_the_corpus() -> None:
    caps = ScriptFormat("line", {"ROMEO": 3, "FIRST WITCH": 2, "DUKE OF YORK": 2}).name_shape()
    assert (caps.max_words, caps.capitals, caps.joiners) == (4, True, frozenset())
    assert caps.fits("HERMAN") and caps.fits("MISTRESS OF SYRACUSE")
    assert caps.fits("HELENNY V ElPH ROMIOLUS")  # misspelt, still mostly capitals
    assert not caps.fits("Herman") and not caps.fits("THE KING OF ALL ENGLAND")
    mixed = ScriptFormat("line", {"First Citizen": 3, "Duke of York": 2}).name_shape()
    assert (mixed.capitals, mixed.joiners) == (False, frozenset({"of"}))
    assert mixed.fits("Third Lord") and mixed.fits("Earl of Kent") and mixed.fits("HERMAN")
    assert not mixed.fits("And thus") and not mixed.fits("Earl and Kent")


# An invented play whose directions use words no real play does: what ends a speech must be
# learned from the corpus, not from a list of Shakespeare's words.
MASQUE = """The Masque of Lanterns

PART 1. A field at dusk.

Wanders in GHOST and CROW

GHOST:
Who walks the field?

CROW:
Only the wind.

Departs CROW

GHOST:
Then I am alone.

PART 2. A barn.

Wanders in CROW, with a lantern

CROW:
Light for the lost!

Departs

GHOST:
Gone again.

Departs GHOST
"""


def test_stage_direction_words_are_learned_from_the_corpus() -> None:
    script = find_script_format(MASQUE)
    assert script is not None
    assert script.directions == {"PART", "Wanders", "Departs"}  # not the title's "The"
    assert find_script_format(PLAY).directions == set()  # one "Enter" is not enough


def test_a_speech_ends_at_a_stage_direction_or_scene_heading() -> None:
    stop = NextSpeakerStop(find_script_format(MASQUE))
    speech = "The lantern gutters.\nI go."
    for direction in ("Departs CROW", "Departs", "Wanders in OWL, flying", "PART 3. The hill.",
                      "Departs, weeping"):
        text = f"{speech}\n\n{direction}\n\nGHOST:\nWait."
        assert stop.find(text) == (len(speech), len(speech)), direction
    # A word of a direction inside a speech, or without the blank line before it, is speech.
    for line in ("\nDeparts the light.", "\n\nDeparture is sweet.", "\n\nthe PART I play."):
        assert stop.find(speech + line + "\nMore.")[0] is None, line
    # A half-written direction, and the blank line before it, are held back.
    assert stop.find(f"{speech}\n\nWan") == (None, len(speech))
    assert stop.find(f"{speech}\n\nDeparts") == (None, len(speech))
    assert stop.find(f"{speech}\n\nDeparture") == (None, len(f"{speech}\n\nDeparture"))


def test_directions_are_cached_with_the_speakers(tmp_path: Path) -> None:
    from gptscratch.generation.script import _read_cached

    cached = tmp_path / "script.json"
    cached.write_text('{"style": "line", "speakers": {"A": 2, "B": 2}}')
    assert _read_cached(cached) is False  # from before directions were learned: found again
    cached.write_text('{"style": "line", "speakers": {"A": 2, "B": 2}, "directions": ["Exit"]}')
    assert _read_cached(cached) == ScriptFormat("line", {"A": 2, "B": 2}, frozenset({"Exit"}))
