"""How a setting is declared: once, as a config field with its default, its range and its help.

From a `setting(...)` field come the CLI flag and its help (`cli/parser.py`), the server's
request schema (`server/schemas.py`) and the check when a config is built (`check_settings`),
whose `SettingError` names the setting, never a flag. No torch here: the CLI builds flags cheaply.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

from gptscratch.errors import SettingError, did_you_mean


@dataclass(frozen=True)
class Rule:
    """What a setting accepts, and how it is shown.

    help: one line for `--help`. low / high: the range (None: unbounded), each end included
    unless `low_open` / `high_open`. choices: the values allowed (a setting of words).
    example: a good value to suggest in an error. note: what an error adds after it. says:
    the rule in words, where not `describe`'s. flag / metavar: the command-line flag and its
    value's name, where not the default ones.
    """

    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    example: Any = None
    note: str = ""
    says: str = ""
    flag: str | None = None
    metavar: str | None = None

    def describe(self, value: Any = None, kind: Any = None) -> str:
        """The rule in words: "must be >= 1", "must be in (0, 1]", "must be one of a, b" (with
        a "did you mean" for a misspelt `value`), "must be true or false"."""
        if self.says:
            return self.says
        if kind is bool:
            return "must be true or false"
        if self.choices:
            return f"must be one of {', '.join(self.choices)}" + did_you_mean(str(value),
                                                                              self.choices)
        if self.low is not None and self.high is not None:
            return (f"must be in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"must be {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"must be {'<' if self.high_open else '<='} {self.high:g}"
        return "is not valid"

    def allows(self, value: Any, kind: Any) -> bool:
        """Whether `value` is of the setting's type (`kind`) and inside its range."""
        if self.choices:
            return value in self.choices
        if kind is bool or kind is str:
            return isinstance(value, kind)
        if kind not in (int, float):
            return True  # a tuple of strings, say: its config checks it
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if kind is int and not isinstance(value, int) or not math.isfinite(value):
            return False
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok


def setting(default: Any, help: str, **rule: Any) -> Any:
    """A config field declared with its rule (`Rule`'s fields by name)."""
    return dataclasses.field(default=default, metadata={"rule": Rule(help, **rule)})


def rules(cls: type) -> dict[str, Rule]:
    """Every declared setting of a config class, by name, in field order."""
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(cls) if "rule" in f.metadata}


@functools.cache
def kinds(cls: Any) -> dict[str, Any]:
    """Each field's type, Optional removed: `int | None` -> int, `tuple[str, ...]` as it is."""
    hints = get_type_hints(cls)  # resolves the string annotations of `from __future__`
    found = {}
    for name, hint in hints.items():
        if get_origin(hint) in (Union, types.UnionType):
            hint = next(a for a in get_args(hint) if a is not type(None))
        found[name] = hint
    return found


def check_settings(config: Any) -> None:
    """Check every declared setting of `config` against its rule (None passes where the default
    is None: "not set"); SettingError for the first that breaks it."""
    types_of: dict[str, Any] = kinds(type(config))  # type: ignore[arg-type]
    for f in dataclasses.fields(config):
        rule = f.metadata.get("rule")
        value = getattr(config, f.name)
        if rule is None or (value is None and f.default is None):
            continue
        if not rule.allows(value, types_of[f.name]):
            raise SettingError(f.name, value, rule.describe(value, types_of[f.name]),
                               rule.example, rule.note)
