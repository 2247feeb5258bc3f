"""Where generated text ends, and how much of it is safe to show yet.

A stop rule looks at a row's text so far and answers two things: where the text ends (a stop
string's start, or where the next speaker's heading begins; None while it goes on) and how
many characters can be shown now. Text that may still turn into a stop (the start of a stop
string, a half-written heading) and an incomplete UTF-8 character (a byte-level BPE token can
end mid-character, which decodes to U+FFFD) are held back, so a stop string is never printed,
not even in part. Script mode's rule (`script.NextSpeakerStop`) follows the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class StopRule(Protocol):
    """Decides where generated text ends. `find(text)` -> (cut, safe): `cut` is the length of
    the text to keep if it has ended (else None); `safe` how many characters can be shown now."""

    def find(self, text: str) -> tuple[int | None, int]: ...


class StopStrings:
    """End at the first of some (non-empty) strings; the string itself is not output."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = list(stops)

    def find(self, text: str) -> tuple[int | None, int]:
        hits = [p for p in (text.find(s) for s in self.stops) if p >= 0]
        if hits:
            return min(hits), min(hits)
        # Hold back a tail that might be the beginning of a stop string.
        held = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    held = max(held, n)
                    break
        return None, len(text) - held


def apply_rules(text: str, rules: Sequence[StopRule]) -> tuple[int | None, int]:
    """Combine stop rules: the earliest cut wins, and only what every rule deems safe shows
    (never half a character)."""
    cut: int | None = None
    safe = len(text.rstrip("\ufffd"))
    for rule in rules:
        c, s = rule.find(text)
        safe = min(safe, s)
        if c is not None:
            cut = c if cut is None else min(cut, c)
    return cut, safe
