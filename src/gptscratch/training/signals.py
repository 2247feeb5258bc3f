"""Stopping a run on request: SIGINT (Ctrl-C) and SIGTERM (`kill`, job schedulers, containers).

The first signal lets the step under way finish (a step is never cut between the optimizer's
update and the step counter), saves a checkpoint and raises `errors.Interrupted`, which says
how to resume; a second stops at once (every save is atomic, so the last checkpoint stays
whole). Under torchrun the processes agree on the step to stop at, so they save together.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import torch

from gptscratch.errors import Interrupted
from gptscratch.training.distributed import DistContext, agree_any

log = logging.getLogger("gptscratch.train")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """The signals received while a run trains (`watching` installs the handlers)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            raise Interrupted(signum, f"{name} again: stopped at once; the last checkpoint "
                                      "is whole (continue with --resume)")
        self.signum = signum
        log.warning("%s: finishing this step and saving a checkpoint (%s again stops at "
                    "once)", name, name)

    @contextlib.contextmanager
    def watching(self) -> Iterator[StopRequests]:
        """Handle SIGINT and SIGTERM for the duration of the block (in the main thread; a
        run in another thread keeps the process's handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def requested(self, ctx: DistContext, device: torch.device) -> int | None:
        """The signal to stop on, agreed by every process (None: go on)."""
        if not ctx.enabled:
            return self.signum
        return self.signum or (signal.SIGTERM if agree_any(self.signum is not None, ctx, device)
                               else None)
