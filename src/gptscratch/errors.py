"""The exceptions for mistakes a user can fix, and for a run stopped by a signal.

Library code raises `UserError` with a one-line message naming the problem and the fix; the
CLI prints `error: <message>` and exits 2. Anything else is a bug and keeps its traceback.
"""

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input: a one-line message that says what was wrong and what to do."""


class SettingError(UserError):
    """A setting's value outside its rule, named by the setting, never by a flag: the CLI
    (`render(flag)`) and the server (`describe()`) say it in their own words.

    Attributes:
        setting: its name (`top_k`); value: the value given; rule: "must be >= 1"; example:
        a good value to try, or None; note: more to say (", or leave it out to keep all").
    """

    def __init__(self, setting: str, value: object, rule: str, example: object = None,
                 note: str = "") -> None:
        self.setting, self.value, self.rule = setting, value, rule
        self.example, self.note = example, note
        super().__init__(self.render(None))

    def describe(self) -> str:
        """The setting, its value and its rule: `top_k (0) must be >= 1`."""
        return f"{self.setting} ({self.value!r}) {self.rule}"

    def render(self, flag: str | None) -> str:
        """The whole message, its fix spelled for `flag` (`--top-k 50`) or, if None, Python."""
        if self.example is None:
            return self.describe() + self.note
        fix = f"{flag} {self.example}" if flag else f"{self.setting}={self.example!r}"
        return f"{self.describe()}; try {fix}{self.note}"


def require(ok: bool, message: str) -> None:
    """Raise `UserError(message)` unless `ok`: the validation idiom of the config classes."""
    if not ok:
        raise UserError(message)


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """" (did you mean X?)" for the choice closest to a misspelt `value`, or "" if none is."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class Interrupted(BaseException):
    """A run stopped by a signal (SIGINT, SIGTERM). The CLI prints `message` (where it stopped,
    how to continue) and exits 128 + `signum`, as a shell does. Not an `Exception`, like
    KeyboardInterrupt, so catch-all handlers (logging's) do not swallow it."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.message = message


def interruption_behind(exc: BaseException) -> Interrupted | None:
    """The `Interrupted` behind `exc`, if any: code may turn a second signal into its own error
    (torch.save's C++ writer: a RuntimeError whose context is the `Interrupted`)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, Interrupted):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
