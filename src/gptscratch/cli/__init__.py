"""The `gptscratch` command: parses arguments (`parser.py`), runs a sub-command through
`gptscratch.api` (`commands.py`, `generate.py`) and reports a `UserError` as one line on stderr,
exit code 2 (a `SettingError` with its flag). Only this package configures logging.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from gptscratch.cli.commands import COMMANDS
from gptscratch.cli.parser import build_parser, flag_of
from gptscratch.errors import Interrupted, SettingError, UserError, interruption_behind


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of each record, so it keeps working when
    stderr is swapped (pytest's capture, notebooks) after logging was configured."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(quiet: bool) -> None:
    """Progress and info lines to stderr (stdout carries only results); under torchrun, ranks
    other than 0 show only warnings and errors, tagged with their rank."""
    handler = _StderrHandler()
    rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
    other_rank = rank != "0"
    handler.setFormatter(logging.Formatter(f"[rank {rank}] %(message)s" if other_rank
                                           else "%(message)s"))
    logger = logging.getLogger("gptscratch")
    logger.handlers = [handler]
    logger.setLevel(logging.WARNING if quiet or other_rank else logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `gptscratch` and `python -m gptscratch`; returns the exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet)
    try:
        COMMANDS[args.command](args)
    except UserError as e:
        said = e.render(flag_of(e.setting)) if isinstance(e, SettingError) else str(e)
        print(f"error: {said}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(e.message, file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        stopped = interruption_behind(e)
        if stopped is None:
            raise
        print(stopped.message, file=sys.stderr)
        return 128 + stopped.signum
    return 0
