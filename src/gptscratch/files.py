"""Where gptscratch writes, and how: the cache folder, atomic writes, sha256 hashes, and the
marker that makes a folder ours. It sits at the bottom of the layers, beside `errors`.

Every write goes through `atomic_file` or `atomic_dir`: a temporary beside the destination,
renamed into place, so a crash or Ctrl-C leaves the old version or the new, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
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
    """`cache_path()`, created if needed (a UserError if it cannot be)."""
    path = cache_path()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the cache folder '{path}' ({exc.strerror}); "
                        "set GPTSCRATCH_CACHE to a writable folder") from exc
    return path


def cached_measurement(file_name: str, key: str, measure: Callable[[], float]) -> float:
    """A number measured once per `key` (a machine and what was measured on it) and kept in
    the JSON table `cache_dir()/file_name`; a table that cannot be read is measured anew."""
    path = cache_dir() / file_name
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    if not isinstance(table, dict):
        table = {}
    if isinstance(table.get(key), (int, float)):
        return float(table[key])
    value = measure()
    try:  # read again: another run may have added its own entries meanwhile
        latest = json.loads(path.read_text())
        table = latest if isinstance(latest, dict) else table
    except (OSError, ValueError):
        pass
    table[key] = value
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(table, indent=2) + "\n")
    return value


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
    """Give `path` (and all under it) the permissions a plain `open` or `mkdir` would: temporary
    folders and some writers (safetensors) make them private (0600 / 0700)."""
    mask = _umask()
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_file(path: Path, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` (whose folder must exist), moved onto it if the
    block succeeds, else removed. `size`: the bytes it will hold, where known, for a full
    disk's message (else it says what was written when the disk filled)."""
    # A fresh unique name rather than mkstemp: the caller creates the file, so it gets the
    # usual umask permissions instead of mkstemp's 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        _as_if_created_plainly(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as exc:
        written = _size(tmp)
        tmp.unlink(missing_ok=True)
        _raise_if_disk_full(exc, path, max(written, size or 0))
        raise


def old_version(dest: Path) -> Path:
    """Where `atomic_dir` keeps the previous `dest` for the moment of the swap."""
    return dest.with_name(dest.name + ".old")


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a new empty folder beside `dest`, swapped into place if the block succeeds, else
    removed. An old `dest` is renamed to `old_version(dest)` first (a folder cannot be replaced
    in one rename), so one whole version always exists under one of the two names (readers
    such as `checkpoints.resolve_checkpoint` fall back to `.old`)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        _as_if_created_plainly(tmp)
        for item in [*tmp.rglob("*"), tmp]:  # on disk before it is renamed into place
            _fsync(item)
        old = old_version(dest)
        _discard(old, dest)
        if dest.exists():
            os.rename(dest, old)
        os.rename(tmp, dest)
        _fsync(dest.parent)
        _discard(old, dest)
    except BaseException as exc:
        written = _size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(exc, dest, max(written, _size(dest)))
        raise


def _discard(folder: Path, dest: Path) -> None:
    """Delete `folder` (an old `dest`) without ever showing it half-deleted under its name:
    rename it to a temporary name that a cleanup of leftovers also removes, then delete."""
    if not folder.exists():
        return
    doomed = folder.with_name(f".{dest.name}.tmp-discarded-{uuid.uuid4().hex[:12]}")
    os.rename(folder, doomed)
    shutil.rmtree(doomed)


def _fsync(path: Path) -> None:
    """fsync a file or folder: a rename is atomic, but only fsynced data survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    """Bytes in a file or under a folder (0 if it is gone)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _raise_if_disk_full(exc: BaseException, dest: Path, needed: int) -> None:
    """A full disk (or quota, or file-size limit) is the user's to fix: say so in one line."""
    reason = _disk_full_reason(exc)
    if reason is not None:
        free = shutil.disk_usage(dest.parent).free
        raise UserError(f"no space left to write '{dest}' ({reason}): it needs about "
                        f"{_amount(needed)}, and {_amount(free)} is free on its disk; free "
                        "some space or write elsewhere (nothing was lost: the previous "
                        "version, if any, is intact)") from None


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _disk_full_reason(exc: BaseException | None) -> str | None:
    """The system's words if `exc` or an error behind it says the disk, quota or file-size
    limit is full: an OSError's errno, a Rust library's "(os error N)" (safetensors,
    tokenizers), or torch.save's RuntimeError raised while handling the OSError."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return exc.strerror or os.strerror(exc.errno)
        found = re.search(r"\(os error (\d+)\)", str(exc))
        if found and int(found.group(1)) in _DISK_FULL:
            return os.strerror(int(found.group(1)))
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def append_text(path: Path, text: str) -> None:
    """Append `text` to a log file; a full disk is a one-line UserError, as in `atomic_file`."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        _raise_if_disk_full(exc, path, len(text.encode()))
        raise


def _amount(n: int) -> str:
    """Bytes as a person reads them: 950 bytes, 108 kB, 3.4 MB, 12.0 GB."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}" if unit != "kB" else f"{n / scale:.0f} kB"
    return f"{n} bytes"


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


# The file that marks a folder as gptscratch's own (a run folder, a prepared-data folder).
OWNER_MARKER = ".gptscratch.json"


def owned(folder: Path) -> bool:
    """Whether `folder` carries gptscratch's marker."""
    return (folder / OWNER_MARKER).is_file()


def foreign_entries(folder: Path, ours: Callable[[Path], bool]) -> list[str]:
    """The entries of a folder not gptscratch's, to name in a refusal: none if it is missing,
    empty, marked, or `ours(folder)` recognises it (made before the marker existed)."""
    if not folder.is_dir() or owned(folder) or ours(folder):
        return []
    return sorted(p.name for p in folder.iterdir())


_LEFTOVER = re.compile(r"\..+\.\d+\.[0-9a-f]{12}\.tmp")  # atomic_file's temporary names


def remove_leftovers(folder: Path) -> None:
    """Delete what a killed `atomic_file` left in a folder of ours (`.NAME.PID.HEX.tmp`) only."""
    if not owned(folder):
        return
    for path in folder.glob(".*.tmp"):
        if _LEFTOVER.fullmatch(path.name) and path.is_file():
            path.unlink(missing_ok=True)


def claim(folder: Path, kind: str) -> None:
    """Create `folder` if needed and mark it ours (`kind`: what it holds); check
    `foreign_entries` first: nothing is written into someone else's folder."""
    folder.mkdir(parents=True, exist_ok=True)
    if not owned(folder):
        with atomic_file(folder / OWNER_MARKER) as tmp:
            tmp.write_text(json.dumps({"made_by": "gptscratch", "kind": kind}) + "\n",
                           encoding="utf-8")
