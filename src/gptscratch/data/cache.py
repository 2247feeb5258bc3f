"""Where gptscratch keeps downloaded and derived files, and how it writes them safely.

The built-in corpus and the default prepared-data folders live under `cache_dir()`. Every file
the data layer writes goes through `atomic_file`, so a crash or Ctrl-C leaves either the old
file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from gptscratch.errors import UserError


def cache_dir() -> Path:
    """Return the gptscratch cache folder, creating it if needed.

    The folder is `$GPTSCRATCH_CACHE` if set, else `$XDG_CACHE_HOME/gptscratch`, else
    `~/.cache/gptscratch`.

    Raises:
        UserError: The folder cannot be created.
    """
    if env := os.environ.get("GPTSCRATCH_CACHE"):
        path = Path(env).expanduser()
    elif xdg := os.environ.get("XDG_CACHE_HOME"):
        path = Path(xdg).expanduser() / "gptscratch"
    else:
        path = Path.home() / ".cache" / "gptscratch"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the cache folder '{path}' ({exc.strerror}); "
            "set GPTSCRATCH_CACHE to a writable folder"
        ) from exc
    return path


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it onto `path` if the block succeeds.

    The temporary file sits in the same folder, so the final `os.replace` is atomic. If the
    block raises, the temporary file is removed and `path` is left untouched.

    Args:
        path: The file to create or replace. Its folder must exist.

    Yields:
        The temporary path to write to.
    """
    # A fresh unique name rather than mkstemp: the caller creates the file, so it gets the
    # usual umask permissions instead of mkstemp's 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
