"""The one exception type for mistakes a user can fix.

Library code raises `UserError` with a one-line message that names the problem and the fix;
the CLI turns it into `error: <message>` on stderr and exit code 2, with no traceback.
Anything else that escapes is a bug in gptscratch and keeps its traceback.
"""

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input: a one-line message that says what was wrong and what to do."""


def require(ok: bool, message: str) -> None:
    """Raise `UserError(message)` unless `ok`: the validation idiom of the config classes."""
    if not ok:
        raise UserError(message)


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """" (did you mean X?)" for the choice closest to a misspelt `value`, or "" if none is
    close: the hint every "unknown ..." message adds."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
